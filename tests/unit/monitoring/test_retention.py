"""Trace retention on real traces in a temporary sqlite store: the true labels on the traces a prune deletes are kept
first (a kept-labels run, one Parquet part per chunk), the traces are deleted in chunks, and a retrain reads the kept
labels beside the live ones."""

from __future__ import annotations

import time

import mlflow
import numpy as np
from click.testing import CliRunner

from newscat.cli import main
from newscat.config import build_config
from newscat.monitoring.feedback import attach_feedback
from newscat.monitoring.retention import KEPT_DIR, kept_labels, prune_traces
from newscat.monitoring.retrain import labelled_live_rows
from newscat.serving.tracing import TraceSettings
from tests.unit.monitoring.traffic import EXPERIMENT, LABELS, NAME, start_tracer, traffic

HOUR_NS = 3600 * 10**9


def test_prune_keeps_the_labels_then_deletes_in_chunks_and_retrain_reads_them(champion: str) -> None:
    tracer = start_tracer(TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion", texts=False))
    news, probabilities = traffic(np.random.default_rng(7), 12, [0.25] * 4, 8)
    news = [f"story {chr(97 + i)} {text}" for i, text in enumerate(news)]  # distinct, not near-duplicates
    two_hours_ago = time.time_ns() - 2 * HOUR_NS
    ids: list[str] = []
    for request in range(6):  # 5 requests two hours ago, then one now; two texts each
        start_ns = two_hours_ago + request * 10**6 if request < 5 else time.time_ns()
        part = slice(2 * request, 2 * request + 2)
        got = tracer.record(news[part], probabilities[part], np.zeros(2, bool), start_ns=start_ns)
        assert got is not None, tracer.report()
        ids += got
    assert tracer.wait_idle(60), tracer.report()
    truth = [LABELS[(int(p.argmax()) + 1) % 4] for p in probabilities]  # the served answers were wrong
    # Every text labelled with its text, but the third request's second row, labelled without it.
    rows = [{"id": i, "label": t, "text": n} for i, t, n in zip(ids, truth, news, strict=True)]
    rows[5].pop("text")
    assert not attach_feedback(rows, source="desk").refused

    outcome = prune_traces("1h", experiment=EXPERIMENT, chunk=2)
    assert (outcome.deleted, outcome.kept_labels, outcome.experiment) == (5, 10, EXPERIMENT)
    assert outcome.text("1h") == (
        f"deleted 5 traces of experiment '{EXPERIMENT}' older than 1h; the 10 true labels on them kept first "
        f"(run {outcome.kept_run_id}, {KEPT_DIR}/)"
    )
    experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    assert len(mlflow.search_traces(locations=[experiment_id], return_type="list")) == 1  # the recent one
    parts = mlflow.MlflowClient().list_artifacts(outcome.kept_run_id, KEPT_DIR)
    assert len(parts) == 3  # 2 + 2 + 1 traces: one part per chunk, each written before its traces were deleted

    kept = kept_labels(experiment_id, champion, 0, time.time_ns() // 10**6)
    assert list(kept["true_label"]) == truth[:10] and list(kept["label_source"]) == ["desk"] * 10
    assert list(kept["text"]) == [*news[:5], None, *news[6:10]]
    assert list(kept["predicted_label"]) == [LABELS[int(p.argmax())] for p in probabilities[:10]]
    assert set(kept["model_id"]) == {champion} and kept["timestamp_ms"].is_monotonic_increasing
    assert kept_labels(experiment_id, "m-other", 0, time.time_ns() // 10**6).empty

    # The retrain learns from the kept labels and the live ones alike: 9 kept with their texts, 2 live.
    cfg = build_config({"monitor": {"experiment": EXPERIMENT}, "retrain": {"since": "3h", "min_live_rows": 10}})
    live = labelled_live_rows(cfg, champion)
    order = [*news[:5], *news[6:12]]
    assert list(live.train["text"]) + list(live.holdout["text"]) == order
    assert len(live.holdout) == 6 and list(live.holdout["label"]) == truth[6:12]  # 6: the fewest at alpha 0.05


def test_the_command_says_what_it_kept(champion: str) -> None:
    # The server's default: the model's own experiment, texts kept in the traces.
    tracer = start_tracer(TraceSettings(model_uri=f"models:/{NAME}@champion", texts=True))
    news, probabilities = traffic(np.random.default_rng(8), 2, [0.25] * 4, 8)
    ids = tracer.record(news, probabilities, np.zeros(2, bool), start_ns=time.time_ns() - 2 * HOUR_NS)
    assert ids is not None and tracer.wait_idle(60), tracer.report()
    assert not attach_feedback([{"id": ids[1], "label": "World"}]).refused
    result = CliRunner().invoke(main, ["prune-traces", f"{NAME}@champion", "--older-than", "1h"])
    assert result.exit_code == 0, result.output
    assert "older than 1h; the 1 true labels on them kept first (run " in result.output
    kept = kept_labels(mlflow.get_logged_model(champion).experiment_id, champion, 0, time.time_ns() // 10**6)
    assert list(zip(kept["row"], kept["true_label"], kept["text"], strict=True)) == [(1, "World", news[1])]
