"""Export: packaging a classifier as a pyfunc model (`pyfunc`: a clean folder of a checkpoint, saved with only the
serving code inside), and the final model's fast serving paths (ONNX fp32 and int8 graphs, torch bf16), each scored
against torch fp32 on validation and training texts, never the test split, before it may become the model's default.
Nothing here talks to a tracking server or a registry."""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "gate": ("AGREEMENT_TEXTS", "GateDecision", "GateTexts"),
        "package": ("ServingBuild", "add_lexical", "gate_serving_paths", "serving_table"),
        "pyfunc": ("export_classifier", "save_pyfunc"),
        "reference": (
            "CATEGORICAL",
            "CORRECT",
            "FEATURES",
            "NUMERIC",
            "REFERENCE_DIR",
            "REFERENCE_FILE",
            "features_of_answers",
            "features_of_records",
        ),
    },
)
