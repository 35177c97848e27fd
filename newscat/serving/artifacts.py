"""The files a served model is made of: weights, tokenizer and settings, their SHA-256 checked at load, and which of
newscat's code ships inside it (`SHIPPED_CODE`). The export that writes them is `newscat.export.pyfunc`.

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
from collections.abc import Mapping
from pathlib import Path

from mlflow.exceptions import MlflowException

log = logging.getLogger("newscat")

SETTINGS_FILE = "newscat.json"
SETTINGS_DIGEST_FILE = "newscat.sha256"  # the SHA-256 of newscat.json, which cannot hold its own digest
# The explicit switch that loads a model whose digests are missing (never one whose digests differ).
ALLOW_UNVERIFIED_ENV = "NEWSCAT_ALLOW_UNVERIFIED"
WEIGHTS_FILE = "model.safetensors"
# The code a logged model ships (`code_paths`), relative to the package: the served model and the text functions it
# shares with training. Nothing else of newscat (CLI, Optuna, Spark, training, tracking) goes inside a model.
SHIPPED_CODE = ("__init__.py", "faces.py", "names.py", "data/__init__.py", "data/text.py", "serving")
# Files of a Trainer checkpoint that make up the served model; pickles (training_args.bin) are left out.
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


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
    """The SHA-256 of `model.safetensors` recorded in the model's settings at export
    (`newscat.export.pyfunc.export_classifier`)."""
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
