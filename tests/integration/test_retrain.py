"""`newscat retrain` end to end on a tiny project: a champion tuned and promoted by `newscat tune`, loaded as a user
loads it with tracing on and texts kept (the served model's own tracer writes the traces), true labels fed back,
then `newscat retrain --promote auto` in a subprocess: a challenger that learned from the older labelled answers,
never from the newest ones, gated against the champion on those and on the test split."""

from __future__ import annotations

import subprocess
import time

import mlflow
import pandas as pd
import pytest

from newscat.config import DataConfig
from newscat.data.load import load_news
from newscat.monitoring.feedback import attach_feedback
from newscat.monitoring.retrain import LIVE_ROWS_TAG, LIVE_WINDOW_TAG
from newscat.registry.promotion import PROMOTIONS_EXPERIMENT
from newscat.tracking.datasets import dataset_record
from tests.helpers import CLASSES, TinyProject, make_news, tiny_project

pytestmark = pytest.mark.integration
SERVED = "served-tiny"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    project = tiny_project(tmp_path_factory.mktemp("retrain"), n_train=6, n_test=2)
    result = project.tune(n_trials=1, max_epochs=1, promote="auto")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return project


def _serve_and_label(project: TinyProject, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """20 news items answered by the champion with tracing on and texts kept; their true labels fed back."""
    for name, value in {
        "NEWSCAT_TRACING": "on",
        "NEWSCAT_TRACE_TEXTS": "on",
        "NEWSCAT_TRACE_EXPERIMENT": SERVED,
        "NEWSCAT_TRACE_MODEL_URI": "models:/newscat@champion",
        "NEWSCAT_TRACE_CPU": "100",
        "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "true",  # the tracer's process-wide switch, undone after the test
    }.items():
        monkeypatch.setenv(name, value)
    model = mlflow.pyfunc.load_model("models:/newscat@champion")
    tracer = model.unwrap_python_model()._tracer
    deadline = time.monotonic() + 60
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    news = [(f"{title}. {text}", CLASSES[label - 1]) for label, title, text in make_news(5, seed=11)]
    ids: list[str] = []
    for start in range(0, len(news), 4):  # five requests, oldest first
        batch = [text for text, _ in news[start : start + 4]]
        ids += list(model.predict(pd.DataFrame({"text": batch}))["prediction_id"])
        time.sleep(0.01)  # distinct trace timestamps: "newest" is well defined
    assert tracer.wait_idle(120) and tracer.counts == {"traced": 5}, tracer.report()
    report = attach_feedback([{"id": i, "label": label} for i, (_, label) in zip(ids, news, strict=True)])
    assert not report.refused, report.text()
    mlflow.tracing.reset()
    return news


def test_the_challenger_learns_from_older_labelled_traffic_and_is_gated_on_the_newest(
    project: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow.set_tracking_uri(project.tracking_uri)
    news = _serve_and_label(project, monkeypatch)
    config = project.root / "retrain.yaml"  # the tiny project's config (its last section is `train`), and more
    config.write_text(
        project.config.read_text()
        + "  max_epochs: 1\n"
        + f"model:\n  max_length: 24\ndata:\n  max_eval_samples: 0\ntune:\n  storage: {project.storage}\n"
        + f"monitor:\n  experiment: {SERVED}\nretrain:\n  since: 1h\n  min_live_rows: 10\n  holdout_share: 0.3\n"
    )
    result = subprocess.run(
        ["newscat", "retrain", "newscat@champion", "--config", str(config), "--promote", "auto"],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    out = result.stdout
    assert "challenger: newscat version 2, trained on the original rows and 14 labelled live texts; 6 newer" in out
    assert "gate on the held-out recent traffic:" in out and "gate on the original test split:" in out

    client = mlflow.MlflowClient()
    version = client.get_model_version("newscat", "2")
    assert version.tags[LIVE_ROWS_TAG] == "14 trained on, 6 held out"
    assert version.tags[LIVE_WINDOW_TAG].startswith("mlflow-traces:experiment=")
    assert (
        "## Live data" in version.description and "The newest 6 labelled answers were held out" in version.description
    )
    assert str(client.get_model_version_by_alias("newscat", "challenger").version) == "2"

    # Trained on the 14 older answers, never on the 6 newest: the held-out slice is what the first gate scored.
    folder = next((project.root / "work").glob("retrain-newscat-*"))
    trained = set(pd.read_csv(folder / "train" / "train.csv")["text"])
    recent = pd.read_csv(folder / "recent" / "test.csv")
    texts = [text for text, _ in news]
    assert set(texts[:14]) <= trained and not set(texts[14:]) & trained
    assert sorted(recent["text"]) == sorted(texts[14:])
    study_run = client.get_run(version.tags["parent_run_id"])
    contexts = {i.tags[0].value: i.dataset for i in study_run.inputs.dataset_inputs if i.tags}
    assert contexts["live_train"].source == contexts["live_holdout"].source == version.tags[LIVE_WINDOW_TAG]

    gates = client.search_runs(
        [client.get_experiment_by_name(PROMOTIONS_EXPERIMENT).experiment_id],
        filter_string="tags.`gate.challenger` = '2'",
    )
    recent_digest = dataset_record(load_news(DataConfig(source=str(folder / "recent")), seed=42).test, "", "test")
    assert sorted(r.data.tags["gate.dataset_digest"] for r in gates) == sorted(
        [
            recent_digest["digest"],
            load_news(DataConfig(source=str(project.data)), seed=42).test.pipe(
                lambda test: dataset_record(test, "", "test")["digest"]
            ),
        ]
    )  # one gate on the held-out answers, one on the original test split
    passed_both = "passed both gates; promoted to champion" in out
    assert str(client.get_model_version_by_alias("newscat", "champion").version) == ("2" if passed_both else "1")
