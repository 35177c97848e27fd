"""Serving: the code shipped inside every logged model (the PythonModel, input checks, micro-batching, precision,
artifacts and their checksums). Its face imports each name from its module on first use; what ships is
`newscat.serving.artifacts.SHIPPED_CODE`."""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "artifacts": (
            "MODEL_FILES",
            "SHIPPED_CODE",
            "WEIGHTS_FILE",
            "file_sha256",
            "logged_weights_sha256",
            "read_settings",
            "record_files",
            "update_settings",
            "write_settings",
        ),
        "backends": ("ONNX_DIR", "ONNX_FILES", "load_engine"),
        "coverage": ("COVERAGE_EVERY_S", "Coverage", "METRICS", "MODEL_ID_TAG"),
        "inputs": ("CHARS_PER_TOKEN_CAP", "MAX_BATCH", "TEXT_COLUMN"),
        "lexical": ("Block", "LexicalModel", "LexicalShapeError", "check_probabilities", "mix", "prepare_texts"),
        "model": ("LOGGED_MODEL_KEY", "Scorer", "Scores", "class_probabilities", "recorded_path_loads"),
        "pooling": ("apply_pooling", "apply_saved_pooling", "has_pooler", "pooling_problem"),
        "precision": ("native_bf16", "use_bf16"),
        "tokens": ("TokenEncoder",),
        "tracing": (
            "CLASSES_TAG",
            "MODEL_ID_METADATA",
            "REGISTERED_MODEL_TAG",
            "REGISTERED_VERSION_TAG",
            "ROWS_TAG",
            "SPAN_NAME",
            "parse_prediction_id",
        ),
    },
)
