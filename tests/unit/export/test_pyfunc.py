"""Packaging: a checkpoint becomes a clean classifier folder (no pickles, the SHA-256 of every shipped file
recorded), saved as a models-from-code pyfunc with only the serving code inside, no input schema, and the
requirements of the backend it serves with; a saved copy records the LoggedModel it is logged as."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from transformers import PreTrainedTokenizerBase

from newscat.export.pyfunc import (
    SIGNATURE,
    classifier_copy,
    export_classifier,
    pip_requirements,
    save_pyfunc,
    shipped_code,
)
from newscat.serving.artifacts import MODEL_FILES, SETTINGS_FILE, SHIPPED_CODE, read_settings, verify_files
from newscat.serving.model import LOGGED_MODEL_KEY
from tests.helpers import labelled_classifier

LABELS = ("World", "Sports", "Business", "Sci/Tech")


@pytest.fixture(scope="module")
def pyfunc_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A saved pyfunc model of the embedded encoder with a fresh head, as `log_classifier_model` saves it."""
    model_dir = labelled_classifier(tmp_path_factory.mktemp("model"), tokenizer, LABELS)
    return save_pyfunc(model_dir, tmp_path_factory.mktemp("pyfunc") / "model", model_id="m-0123")


def test_the_saved_model_loads_and_answers(pyfunc_dir: Path) -> None:
    answer = mlflow.pyfunc.load_model(str(pyfunc_dir)).predict(pd.DataFrame({"text": ["Lakers win the final"]}))
    assert answer["label"][0] in LABELS


def test_config_and_tokenizer_files_are_in_the_checked_digests(pyfunc_dir: Path) -> None:
    classifier = classifier_copy(pyfunc_dir)
    shipped = {name for name in MODEL_FILES if (classifier / name).is_file()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= shipped  # what this tokenizer saves
    assert set(read_settings(classifier)["files_sha256"]) == shipped


def test_the_copy_records_its_logged_model_inside_its_checked_settings(pyfunc_dir: Path) -> None:
    classifier = classifier_copy(pyfunc_dir)
    assert classifier.parent.name == "artifacts"  # where MLflow copied the `classifier` artifact
    settings = read_settings(classifier)
    assert settings[LOGGED_MODEL_KEY] == "m-0123"
    verify_files(classifier, settings, environ={})  # written through write_settings: its digest holds


def test_only_the_serving_code_ships_inside_the_model(pyfunc_dir: Path, tmp_path: Path) -> None:
    code = {p.relative_to(pyfunc_dir / "code").as_posix() for p in (pyfunc_dir / "code").rglob("*.py")}
    assert "newscat/serving/entry.py" in code and "newscat/data/text.py" in code
    assert not {c for c in code if c.startswith(("newscat/training/", "newscat/tracking/", "newscat/export/"))}
    root = shipped_code(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == sorted({entry.split("/")[0] for entry in SHIPPED_CODE})


def test_a_checkpoint_leaves_its_pickles_behind_and_needs_safetensors_weights(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (checkpoint / "config.json").write_text('{"id2label": {"0": "a", "1": "b"}}', "utf-8")
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors to serve"):
        export_classifier(checkpoint, tmp_path / "refused", max_length=8, base_model="x")
    (checkpoint / "model.safetensors").write_bytes(b"\x08" * 64)
    model_dir = export_classifier(checkpoint, tmp_path / "model", max_length=8, base_model="x")
    assert not (model_dir / "training_args.bin").exists()
    settings = json.loads((model_dir / SETTINGS_FILE).read_text("utf-8"))
    assert set(settings["files_sha256"]) == {"model.safetensors", "config.json"}
    assert (settings["max_length"], settings["base_model"]) == (8, "x")


def test_signature_has_no_input_schema_and_names_every_output() -> None:
    assert SIGNATURE.inputs is None  # MLflow would cast 1/true/null to strings before the model could refuse them
    assert SIGNATURE.outputs.input_names() == ["label", "score", "probabilities", "truncated"]


def test_onnx_requirements_hold_no_torch_and_torch_requirements_the_cpu_build() -> None:
    onnx = pip_requirements("onnx")
    names = {r.split("==")[0] for r in onnx}
    assert {"onnxruntime", "tokenizers", "uvloop", "httptools", "mlflow-skinny"} <= names
    assert not names & {"torch", "transformers", "mlflow"}  # nothing of torch; the skinny MLflow client
    torch = pip_requirements("torch")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch  # not PyPI's CUDA build
    assert any(r.startswith("torch==") and r.endswith("+cpu") for r in torch)
    assert all("+" not in r for r in onnx + torch if not r.startswith("torch=="))
