"""Packaging a classifier as a pyfunc model: a Trainer checkpoint copied into a clean classifier folder (no pickles,
every file's SHA-256 recorded), and that folder saved as a models-from-code pyfunc with only the serving code inside
and the pinned requirements of the backend it serves with.

Nothing here talks to a tracking server: `newscat.tracking.models` logs what this writes as a LoggedModel. What the
served model checks at load (the files, `MODEL_FILES`, their digests, `SHIPPED_CODE`) is declared in
`newscat.serving.artifacts`, which ships inside the model; this module only writes it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, DataType, Map, Schema

from newscat.serving.artifacts import (
    MODEL_FILES,
    SHIPPED_CODE,
    WEIGHTS_FILE,
    file_sha256,
    update_settings,
    write_settings,
)
from newscat.serving.inputs import MAX_BATCH, TEXT_COLUMN
from newscat.serving.model import LOGGED_MODEL_KEY

# No input schema on purpose: MLflow casts inputs to the schema's types before the model sees them (1, true and
# null would become "1", "True" and "None" and get a 200). The model validates raw input itself (`texts_from`) and
# answers every malformed request with a 400 that says what to send.
SIGNATURE = ModelSignature(
    inputs=None,
    outputs=Schema(
        [
            ColSpec(DataType.string, "label"),
            ColSpec(DataType.double, "score"),
            ColSpec(Map(DataType.double), "probabilities"),
            ColSpec(DataType.boolean, "truncated"),
        ]
    ),
)
EXAMPLE = pd.DataFrame({TEXT_COLUMN: ["Stocks rally as oil prices fall", "Striker scores twice in cup final win"]})
# The CPU build of torch: PyPI's torch for Linux is the CUDA build (several GB of CUDA libraries).
TORCH_CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
# uvloop and httptools: uvicorn uses them when installed (a faster event loop and HTTP parser).
SERVER_PACKAGES = ("uvloop", "httptools")


def export_classifier(checkpoint: Path, target: Path, *, max_length: int, base_model: str) -> Path:
    """Copy a checkpoint's weights and tokenizer into a clean model directory (no pickles)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, target / name)
    if not (target / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{checkpoint}: no {WEIGHTS_FILE} to serve")
    # Every shipped file, not only the weights: config.json holds the label names and the pooling, and the
    # tokenizer files decide which ids a text becomes; an edit of any of them changes the answers.
    shipped = [name for name in MODEL_FILES if (target / name).is_file()]
    settings = {
        "max_length": max_length,
        "base_model": base_model,
        "max_batch": MAX_BATCH,
        "weights_sha256": file_sha256(target / WEIGHTS_FILE),
        "files_sha256": {name: file_sha256(target / name) for name in shipped},  # checked at every load
    }
    write_settings(target, settings)
    return target


def save_pyfunc(model_dir: Path, target: Path, backend: str = "torch", model_id: str | None = None) -> Path:
    """Save a classifier folder as a pyfunc model at `target`: models-from-code, only the serving code inside, and
    the requirements of the backend it serves with by default; with `model_id`, the LoggedModel it is logged as is
    written into the copy's settings (checked at load like the rest), so that a served model knows which it is."""
    with tempfile.TemporaryDirectory(prefix="newscat-code-") as tmp:
        code = shipped_code(Path(tmp))
        mlflow.pyfunc.save_model(
            path=str(target),
            python_model=str(code / "serving" / "entry.py"),  # nothing pickled
            artifacts={"classifier": str(model_dir)},
            code_paths=[str(code)],
            signature=SIGNATURE,
            input_example=EXAMPLE,
            pip_requirements=pip_requirements(backend),
        )
    if model_id:
        update_settings(classifier_copy(target), **{LOGGED_MODEL_KEY: model_id})
    return target


def classifier_copy(pyfunc_dir: Path) -> Path:
    """The classifier folder inside a saved pyfunc model (where MLflow copied the `classifier` artifact)."""
    conf = Model.load(str(pyfunc_dir / "MLmodel")).flavors["python_function"]
    return pyfunc_dir / conf["artifacts"]["classifier"]["path"]


def pip_requirements(backend: str = "torch") -> list[str]:
    """Pinned requirements of the serving environment.

    onnx: no torch and no transformers (tokenizers reads tokenizer.json; ONNX Runtime runs the graph), and
    mlflow-skinny (the scoring server without the tracking server's UI and database packages). torch: the CPU build
    of torch from PyTorch's index, and transformers to build the model.
    """
    from importlib.metadata import version

    def pin(name: str) -> str:
        return f"{name}=={version(name).split('+')[0]}"  # "2.13.0+cpu" -> "2.13.0"

    common = [f"mlflow-skinny=={version('mlflow')}", *map(pin, ("tokenizers", "numpy", "pandas", *SERVER_PACKAGES))]
    if backend == "onnx":
        return [*common, pin("onnxruntime")]
    torch = version("torch").split("+")[0]
    return [*common, TORCH_CPU_INDEX, f"torch=={torch}+cpu", pin("transformers"), pin("safetensors")]


def shipped_code(target: Path) -> Path:
    """Copy the code a logged model needs (`SHIPPED_CODE`) into `target/newscat` (a package tree of just those
    files)."""
    package = Path(__file__).resolve().parents[1]
    root = target / "newscat"
    for relative in SHIPPED_CODE:
        source, destination = package / relative, root / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, destination)
    return root
