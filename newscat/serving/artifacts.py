"""The files a served model is made of: weights, tokenizer and settings, their SHA-256, its requirements and code.

No pickles: safetensors weights, a tokenizer.json and a JSON settings file; the digests recorded at export (weights,
config.json with its labels and pooling, every tokenizer file, and later the graphs and the companion) are checked at
every load. The settings file holds the other files' digests, so its own digest lives beside it (`newscat.sha256`, in
`sha256sum` format), written by `write_settings` after every change of the settings. A model whose digests are
missing (logged by an older newscat, or stripped) loads only when `NEWSCAT_ALLOW_UNVERIFIED=1` says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from mlflow.exceptions import MlflowException

from newscat.serving.inputs import MAX_BATCH

log = logging.getLogger("newscat")

SETTINGS_FILE = "newscat.json"
SETTINGS_DIGEST_FILE = "newscat.sha256"  # the SHA-256 of newscat.json, which cannot hold its own digest
# The explicit switch that loads a model whose digests are missing (never one whose digests differ).
ALLOW_UNVERIFIED_ENV = "NEWSCAT_ALLOW_UNVERIFIED"
WEIGHTS_FILE = "model.safetensors"
# Files of a Trainer checkpoint that make up the served model; pickles (training_args.bin) are left out.
# The code a logged model ships (`code_paths`), relative to the package: the served model and the text functions it
# shares with training. Nothing else of newscat (CLI, Optuna, Spark, training, tracking) goes inside a model.
SHIPPED_CODE = ("__init__.py", "names.py", "data/__init__.py", "data/text.py", "serving")
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def export_classifier(checkpoint: Path, target: Path, *, max_length: int, base_model: str) -> Path:
    """Copy a checkpoint's weights and tokenizer into a clean model directory (no pickles)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, target / name)
    if not (target / "model.safetensors").is_file():
        raise FileNotFoundError(f"{checkpoint}: no model.safetensors to serve")
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


def write_settings(model_dir: Path, settings: dict) -> None:
    """Write the model's settings and then their SHA-256 (`newscat.sha256`): the only way newscat.json is written,
    so that any later edit of it fails the check at load."""
    path = model_dir / SETTINGS_FILE
    path.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    (model_dir / SETTINGS_DIGEST_FILE).write_text(f"{file_sha256(path)}  {SETTINGS_FILE}\n", encoding="utf-8")


def read_settings(model_dir: Path) -> dict:
    """The model's settings as written by `write_settings`."""
    return json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))


def update_settings(model_dir: Path, **entries: object) -> None:
    """Add or replace top-level entries of the model's settings (the gate's decision, the companion's share)."""
    write_settings(model_dir, {**read_settings(model_dir), **entries})


def logged_weights_sha256(model_dir: Path) -> str:
    """The SHA-256 of `model.safetensors` that `export_classifier` recorded in the model's settings."""
    return json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))["weights_sha256"]


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class CorruptModelError(MlflowException):
    """The files on disk are not the files that were logged."""


def verify_files(model_dir: Path, settings: dict, environ: Mapping[str, str] | None = None) -> None:
    """Refuse settings, weights, config, tokenizer or graphs whose SHA-256 differs from the one recorded when the
    model was logged (a copy cut short, or altered), and a model whose digests are missing unless
    `NEWSCAT_ALLOW_UNVERIFIED=1` is set in `environ` (default: os.environ); a differing digest is never allowed."""
    allowed = (os.environ if environ is None else environ).get(ALLOW_UNVERIFIED_ENV, "") == "1"
    verify_settings_file(model_dir, allowed=allowed)
    expected = dict(settings.get("files_sha256", {}))
    if not expected and settings.get("weights_sha256"):  # logged before every file had a digest
        expected = {WEIGHTS_FILE: settings["weights_sha256"]}
    for relative, digest in expected.items():
        path = model_dir / relative
        actual = file_sha256(path) if path.is_file() else "missing"
        if actual != digest:
            raise CorruptModelError(
                f"{path}: SHA-256 {actual[:12]}... differs from the logged {digest[:12]}...; "
                "the artifact copy is incomplete or altered: download it again or re-log the model"
            )
    # A shipped file without a digest could be swapped unnoticed (labels in config.json, the vocabulary).
    unchecked = [name for name in MODEL_FILES if (model_dir / name).is_file() and name not in expected]
    if unchecked:
        _unverified(model_dir, f"no recorded SHA-256 for {', '.join(unchecked)}", allowed=allowed)


def _unverified(model_dir: Path, what: str, *, allowed: bool) -> None:
    """A model whose files cannot all be checked: refused, or loaded with a warning when the user allowed it."""
    if not allowed:
        raise CorruptModelError(
            f"{model_dir}: {what} (a model logged by an older newscat, or its digests were removed): its files "
            f"cannot be checked, so it is not loaded. Re-log the model, or set {ALLOW_UNVERIFIED_ENV}=1 to load it "
            "unverified"
        )
    log.warning("%s: %s; loaded unverified because %s=1", model_dir, what, ALLOW_UNVERIFIED_ENV)


def verify_settings_file(model_dir: Path, *, allowed: bool = False) -> None:
    """Refuse a newscat.json edited after it was written (its digest in newscat.sha256 differs), and one without
    newscat.sha256 unless `allowed` (`NEWSCAT_ALLOW_UNVERIFIED=1`)."""
    sidecar = model_dir / SETTINGS_DIGEST_FILE
    if not sidecar.is_file():
        _unverified(model_dir, f"no {SETTINGS_DIGEST_FILE}, so {SETTINGS_FILE} is not checked", allowed=allowed)
        return
    recorded = sidecar.read_text(encoding="utf-8").split()
    digest = recorded[0] if recorded else "empty"
    actual = file_sha256(model_dir / SETTINGS_FILE)
    if actual != digest:
        raise CorruptModelError(
            f"{model_dir / SETTINGS_FILE}: SHA-256 {actual[:12]}... differs from the {digest[:12]}... recorded in "
            f"{SETTINGS_DIGEST_FILE}: the model's settings were edited after it was logged (or the copy is "
            "incomplete): download it again or re-log the model"
        )


def record_files(model_dir: Path, relatives: list[str]) -> None:
    """Add the SHA-256 of more files (ONNX graphs) to the model's settings, to be checked at every load."""
    settings = read_settings(model_dir)
    known = settings.get("files_sha256") or {WEIGHTS_FILE: settings["weights_sha256"]}  # older models: weights only
    settings["files_sha256"] = {**known, **{r: file_sha256(model_dir / r) for r in relatives}}
    write_settings(model_dir, settings)


# The CPU build of torch: PyPI's torch for Linux is the CUDA build (several GB of CUDA libraries).
TORCH_CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
# uvloop and httptools: uvicorn uses them when installed (a faster event loop and HTTP parser).
SERVER_PACKAGES = ("uvloop", "httptools")


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
    """Copy the code a logged model needs into `target/newscat` (a package tree of just those files)."""
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
