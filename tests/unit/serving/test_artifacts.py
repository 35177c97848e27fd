"""The settings file newscat.json has its SHA-256 beside it (newscat.sha256), and newscat.json holds the SHA-256 of
every other shipped file (weights, config.json, tokenizer files): a model any of whose files was edited after logging
does not load; a model whose digests are missing loads only with NEWSCAT_ALLOW_UNVERIFIED=1, with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from transformers import PreTrainedTokenizerBase

from newscat.export.pyfunc import export_classifier, save_pyfunc
from newscat.serving.artifacts import (
    ALLOW_UNVERIFIED_ENV,
    SETTINGS_DIGEST_FILE,
    SETTINGS_FILE,
    CorruptModelError,
    file_sha256,
    read_settings,
    record_files,
    update_settings,
    verify_files,
)
from tests.helpers import labelled_classifier

LABELS = ("World", "Sports", "Business", "Sci/Tech")


@pytest.fixture(scope="module")
def pyfunc_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A saved pyfunc model of the embedded encoder with a fresh head, as `log_classifier_model` builds it."""
    model_dir = labelled_classifier(tmp_path_factory.mktemp("model"), tokenizer, LABELS)
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


def test_the_settings_digest_travels_with_the_model(pyfunc_dir: Path) -> None:
    classifier = _classifier(pyfunc_dir)
    assert (classifier / SETTINGS_DIGEST_FILE).is_file()
    verify_files(classifier, read_settings(classifier), environ={})  # intact, after a later change of the settings


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


def test_swapped_labels_in_config_json_fail_at_load(pyfunc_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(pyfunc_dir, tmp_path / "model"))
    config = _classifier(copy) / "config.json"
    values = json.loads(config.read_text("utf-8"))
    first, second = values["id2label"]["0"], values["id2label"]["1"]  # World and Sports swapped: wrong answers
    values["id2label"].update({"0": second, "1": first})
    config.write_text(json.dumps(values, indent=2), "utf-8")
    with pytest.raises(CorruptModelError, match=r"config\.json: SHA-256 .* differs from the logged"):
        mlflow.pyfunc.load_model(str(copy))


def test_an_edited_tokenizer_fails_at_load(pyfunc_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(pyfunc_dir, tmp_path / "model"))
    tokenizer = _classifier(copy) / "tokenizer.json"
    values = json.loads(tokenizer.read_text("utf-8"))
    vocab = values["model"]["vocab"]
    vocab["sports"], vocab["stocks"] = vocab["stocks"], vocab["sports"]  # two words read as each other
    tokenizer.write_text(json.dumps(values), "utf-8")
    with pytest.raises(CorruptModelError, match=r"tokenizer\.json: SHA-256 .* differs from the logged"):
        mlflow.pyfunc.load_model(str(copy))


def test_a_missing_checksum_file_refuses_to_load_unless_allowed(
    pyfunc_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.delenv(ALLOW_UNVERIFIED_ENV, raising=False)
    copy = Path(shutil.copytree(pyfunc_dir, tmp_path / "model"))
    (_classifier(copy) / SETTINGS_DIGEST_FILE).unlink()
    with pytest.raises(CorruptModelError, match=rf"no {SETTINGS_DIGEST_FILE}.*set {ALLOW_UNVERIFIED_ENV}=1"):
        mlflow.pyfunc.load_model(str(copy))
    monkeypatch.setenv(ALLOW_UNVERIFIED_ENV, "yes")  # only "1" says so
    with pytest.raises(CorruptModelError, match=ALLOW_UNVERIFIED_ENV):
        mlflow.pyfunc.load_model(str(copy))

    monkeypatch.setenv(ALLOW_UNVERIFIED_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="newscat"):
        model = mlflow.pyfunc.load_model(str(copy))
    assert model.predict(pd.DataFrame({"text": ["Stocks rally"]}))["label"][0] in LABELS
    assert any(SETTINGS_DIGEST_FILE in r.getMessage() and "unverified" in r.getMessage() for r in caplog.records)


def test_a_model_logged_with_the_weights_digest_only_is_refused_unless_allowed(tmp_path: Path) -> None:
    """A model of an older newscat: newscat.sha256 and the weights' digest, but no digest of config.json."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"\x08" * 64)
    (checkpoint / "config.json").write_text('{"id2label": {"0": "a", "1": "b"}}', "utf-8")
    model_dir = export_classifier(checkpoint, tmp_path / "model", max_length=32, base_model="x")
    settings = read_settings(model_dir)
    settings["files_sha256"] = {"model.safetensors": settings["weights_sha256"]}
    from newscat.serving.artifacts import write_settings

    write_settings(model_dir, settings)
    with pytest.raises(CorruptModelError, match=rf"no recorded SHA-256 for config\.json.*{ALLOW_UNVERIFIED_ENV}=1"):
        verify_files(model_dir, settings, environ={})
    verify_files(model_dir, settings, environ={ALLOW_UNVERIFIED_ENV: "1"})  # loads, with a warning
    # The switch allows missing digests only: a recorded digest that differs is refused all the same.
    (model_dir / "model.safetensors").write_bytes(b"\x09" * 64)
    with pytest.raises(CorruptModelError, match="differs from the logged"):
        verify_files(model_dir, settings, environ={ALLOW_UNVERIFIED_ENV: "1"})
