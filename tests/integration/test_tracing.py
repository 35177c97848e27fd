"""Traced serving and feedback end to end: a real `mlflow models serve` of the champion with NEWSCAT_TRACING=on writes
one trace per request to the sqlite store, linked by MLflow to the served LoggedModel and tagged with the registered
version; `newscat feedback` refuses a bad file whole and writes a good one; a server whose tracking store is
unreachable or slow keeps answering at once."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import requests

from newscat.monitoring.feedback import attach_feedback
from newscat.serving.tracing import CLASSES_TAG, REGISTERED_MODEL_TAG, REGISTERED_VERSION_TAG, ROWS_TAG
from tests.helpers import CLASSES, MODEL_NAME, end_group, free_port, serve_model, tool_env
from tests.integration.conftest import TrackedStudy
from tests.outage_servers import faulty_proxy

pytestmark = pytest.mark.integration
EXPERIMENT = "tiny-served"
HEADLINES = [
    "Yankees beat rivals in the championship final",
    "Shares of Intel rise after quarterly earnings",
    "Researchers unveil faster quantum chip",
]
TRACING = {"NEWSCAT_TRACING": "on", "NEWSCAT_TRACE_EXPERIMENT": EXPERIMENT}


def _post(url: str, texts: list[str], timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/invocations", json={"inputs": texts}, timeout=timeout)


def _champion_model_id(tracked_study: TrackedStudy) -> tuple[str, str]:
    """(LoggedModel id, version) behind the champion alias (on sqlite the version's source holds the id)."""
    version = mlflow.MlflowClient(tracked_study.tracking_uri).get_model_version_by_alias(MODEL_NAME, "champion")
    return version.model_id or version.source.removeprefix("models:/"), str(version.version)


@pytest.fixture(scope="module")
def traced(tracked_study: TrackedStudy) -> Iterator[tuple[str, Path]]:
    # No NEWSCAT_TRACE_MODEL_URI: the served files record their own LoggedModel, which the traces must link to.
    env = {**tool_env(tracked_study.tracking_uri), **TRACING}
    env.pop("NEWSCAT_TRACE_MODEL_URI", None)
    log = tracked_study.root / "serve-traced.log"
    with serve_model(f"models:/{MODEL_NAME}@champion", env, log) as url:
        yield url, log


def _traced_answer(url: str, texts: list[str]) -> list[dict]:
    """The first answer that carries ids (the tracer starts tracing once it has found its experiment)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = _post(url, texts)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        if predictions[0]["prediction_id"] is not None:
            return predictions
        time.sleep(0.5)
    pytest.fail("no traced answer within 60 s")


def _trace(
    trace_id: str, timeout: float = 60, tag: str | None = None, log: Path | None = None
) -> mlflow.entities.Trace:
    """The stored trace with its span; with `tag`, once that tag is stored too (a store may hold a trace's spans a
    moment before its tags: through the slow proxy, one 3-second call later). `log`: the server's, shown on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trace = mlflow.get_trace(trace_id, silent=True)
        if trace is not None and trace.data.spans and (tag is None or tag in trace.info.tags):
            return trace
        time.sleep(0.5)
    shown = f"; the server's log ends:\n{log.read_text()[-3000:]}" if log else ""
    pytest.fail(f"trace {trace_id} not in the store{f' with tag {tag}' if tag else ''} within {timeout:.0f} s{shown}")


def _linked_trace(trace_id: str, model_id: str, timeout: float = 60) -> mlflow.entities.Trace:
    """The trace as `search_traces(model_id=...)` finds it. The store may hold a trace's spans a moment before its
    final info (tags, the model link): wait for the link rather than read the first half-written state."""
    _trace(trace_id, timeout)
    experiment = mlflow.MlflowClient().get_experiment_by_name(EXPERIMENT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        linked = mlflow.search_traces(locations=[experiment.experiment_id], model_id=model_id, return_type="list")
        found = [t for t in linked if t.info.trace_id == trace_id]
        if found:
            return found[0]
        time.sleep(0.5)
    stored = mlflow.get_trace(trace_id)
    pytest.fail(f"trace {trace_id} not linked to model {model_id} within {timeout:.0f} s: {stored.info.trace_metadata}")


def test_each_request_is_one_trace_linked_to_the_served_model_with_ids_in_the_answer(
    traced: tuple[str, Path], tracked_study: TrackedStudy
) -> None:
    url, log = traced
    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    predictions = _traced_answer(url, HEADLINES)
    ids = [p["prediction_id"] for p in predictions]
    trace_id = ids[0].rsplit(":", 1)[0]
    assert ids == [f"{trace_id}:{row}" for row in range(3)] and trace_id.startswith("tr-")
    assert all(
        p["label"] in CLASSES and set(p) == {"label", "score", "probabilities", "truncated", "prediction_id"}
        for p in predictions
    )

    model_id, version = _champion_model_id(tracked_study)
    trace = _linked_trace(trace_id, model_id)  # MLflow linked the trace to the model being served
    tags = trace.info.tags
    assert (tags[REGISTERED_MODEL_TAG], tags[REGISTERED_VERSION_TAG]) == (MODEL_NAME, version)
    assert json.loads(tags[CLASSES_TAG]) == list(CLASSES) and tags[ROWS_TAG] == "3"
    (span,) = trace.data.spans
    records = span.outputs["predictions"]
    assert [r["sha256"] for r in records] == [hashlib.sha256(h.encode()).hexdigest() for h in HEADLINES]
    assert [r["label"] for r in records] == [p["label"] for p in predictions]
    scores = [r["probabilities"][r["label"]] for r in records]
    assert scores == pytest.approx([p["score"] for p in predictions], abs=1e-6)
    assert all(0 < r["tokens"] <= 32 and r["truncated"] is False for r in records)
    assert not any(h in json.dumps(trace.to_dict()) for h in HEADLINES)  # texts stay out unless opted in
    assert "newscat tracing on: experiment 'tiny-served'" in log.read_text()


def test_feedback_refuses_a_bad_file_whole_then_writes_a_good_one(
    traced: tuple[str, Path], tracked_study: TrackedStudy, tmp_path: Path
) -> None:
    url, _ = traced
    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    ids = [p["prediction_id"] for p in _traced_answer(url, HEADLINES[:2])]
    _trace(ids[0].rsplit(":", 1)[0])
    env = tool_env(tracked_study.tracking_uri)
    bad = tmp_path / "bad.jsonl"
    rows = [
        {"id": ids[0], "label": "Sports"},
        {"id": "tr-00000000000000000000000000000000:0", "label": "Sports"},
        {"id": ids[1], "label": "Weather"},
        {"id": ids[0], "label": "World"},
    ]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = subprocess.run(
        ["newscat", "feedback", str(bad), "--source", "editor-1"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"line 1: {ids[0]} 'Sports': valid, not written" in result.stdout
    assert "line 2: tr-00000000000000000000000000000000:0 'Sports': REFUSED: unknown id" in result.stdout
    assert "line 3: " in result.stdout and "REFUSED: unknown label 'Weather'" in result.stdout
    assert "line 4: " in result.stdout and "REFUSED: duplicate of line 1 (same prediction" in result.stdout
    assert "3 of 4 rows refused: nothing written" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1].startswith("1 unknown id(s): tr-00000000000000000000000000000000:0")
    trace_id = ids[0].rsplit(":", 1)[0]
    assert not mlflow.get_trace(trace_id).info.assessments

    good = tmp_path / "good.csv"
    good.write_text(f"id,label\n{ids[0]},Sports\n{ids[1]},Business\n")
    result = subprocess.run(
        ["newscat", "feedback", str(good), "--source", "editor-1"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expectations = {
        a.name: (a.value, a.source.source_type, a.source.source_id) for a in mlflow.get_trace(trace_id).info.assessments
    }
    assert expectations == {
        "true_label[0]": ("Sports", "HUMAN", "editor-1"),
        "true_label[1]": ("Business", "HUMAN", "editor-1"),
    }


def test_monitor_judges_the_served_champion_on_its_own_traces_against_its_training_reference(
    traced: tuple[str, Path], tracked_study: TrackedStudy, tmp_path: Path
) -> None:
    url, _ = traced
    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    texts = [f"{headline} (edition {i})" for i in range(12) for headline in HEADLINES]
    ids = [p["prediction_id"] for p in _traced_answer(url, texts)]
    model_id, version = _champion_model_id(tracked_study)
    _linked_trace(ids[0].rsplit(":", 1)[0], model_id)
    truth = ["Sports", "Business", "Sci/Tech"] * 4
    assert not attach_feedback([{"id": i, "label": t} for i, t in zip(ids, truth, strict=False)]).refused
    config = tmp_path / "monitor.yaml"
    config.write_text(f"monitor:\n  since: 1h\n  experiment: {EXPERIMENT}\n  min_texts: 20\n  min_labelled: 10\n")
    result = subprocess.run(
        ["newscat", "monitor", f"{MODEL_NAME}@champion", "--config", str(config)],
        env=tool_env(tracked_study.tracking_uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode in (0, 1, 3), out + result.stderr[-3000:]  # healthy, unhealthy, not judged
    assert out.startswith(f"newscat monitor: {MODEL_NAME}@champion = version {version} (model {model_id})")
    assert re.search(r"reference: \d+ texts: \d+ validation rows", out), out  # logged at release beside the model
    assert re.search(r"; \d+ texts in \d+ traces, (1[2-9]|[2-9]\d|\d{3,}) with true labels\n", out), out
    table = [line.split()[0] for line in out.splitlines() if re.search(r"\s(YES|no)$", line)]
    assert table == ["tokens", "unknown_share", "label"], out  # the tested features, one test each
    shown = [line.split()[0] for line in out.splitlines() if "not tested:" in line]
    assert shown == ["chars", "confidence", "truncated"], out  # shown beside them, never counted
    assert re.search(r"live accuracy [01]\.\d{4} \(95% CI", out), out
    assert (result.returncode == 1) == ("UNHEALTHY" in out)  # the exit status is the verdict printed
    assert re.search(r"^coverage: ", out, re.M), out  # what the window holds against what was served
    run_id = re.search(r"logged: run (\w+) in experiment", out).group(1)
    run = mlflow.get_run(run_id)
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(run_id, "monitor")}
    assert "monitor/drift_report.html" in artifacts


def test_with_tracing_off_the_answer_keeps_its_four_columns(
    tracked_study: TrackedStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion", dst_path=str(tmp_path / "model"))
    monkeypatch.delenv("NEWSCAT_TRACING", raising=False)
    answer = mlflow.pyfunc.load_model(local).predict(pd.DataFrame({"text": HEADLINES}))
    assert list(answer.columns) == ["label", "score", "probabilities", "truncated"]  # what clients got before


def _answers_at_once(url: str, n: int = 20) -> list[dict]:
    """`n` requests in a row, each answered 200 within 2 s (the tiny model needs far less)."""
    predictions = []
    for _ in range(n):
        began = time.perf_counter()
        response = _post(url, HEADLINES[:1], timeout=10)
        assert response.status_code == 200, response.text
        assert time.perf_counter() - began < 2.0
        predictions += response.json()["predictions"]
    return predictions


def test_an_unreachable_tracking_store_neither_slows_nor_fails_serving(
    tracked_study: TrackedStudy, tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion", dst_path=str(tmp_path / "model"))
    env = {**tool_env(f"http://127.0.0.1:{free_port()}"), **TRACING}  # nothing listens there
    log = tmp_path / "serve-down.log"
    with serve_model(local, env, log) as url:
        predictions = _answers_at_once(url)
        # Each answer names the trace it gets once the store answers: the writer's backlog holds it meanwhile.
        assert all(p["label"] in CLASSES and p["prediction_id"] for p in predictions)
    text = log.read_text()
    # Stopped with the store still down: every request answered is counted lost, in the server's last count.
    report = [line for line in text.splitlines() if "lost traces; requests since start: " in line][-1]
    assert report.startswith(f"newscat tracing: {len(predictions)} lost traces;") and "traced" not in report, report


def test_a_slow_tracking_store_neither_slows_nor_fails_serving(tracked_study: TrackedStudy, tmp_path: Path) -> None:
    """Every call to the store takes 4 s (a real `mlflow server` behind a slow proxy): answers still come at once,
    and the traces are written meanwhile. MLflow's version probe before `log_spans` gives up after 3 s, so the
    writer takes MLflow's fallback: each trace's spans go to its artifact."""
    from tests.outage_servers import MlflowServer

    server = MlflowServer(tmp_path, f"sqlite:///{tmp_path}/slow.db").start()
    try:
        mlflow.set_tracking_uri(tracked_study.tracking_uri)
        local = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion", dst_path=str(tmp_path / "m"))

        def slow(method: str, path: str) -> None:
            time.sleep(4)

        with faulty_proxy(lambda: server.url, slow) as proxy:
            env = {**tool_env(proxy), **TRACING}
            log = tmp_path / "serve-slow.log"
            with serve_model(local, env, log) as url:
                first = _traced_answer(url, HEADLINES[:1])[0]["prediction_id"]
                predictions = _answers_at_once(url, 30)
                mlflow.set_tracking_uri(server.url)  # the store itself, not the slow way in
                trace = _trace(first.rsplit(":", 1)[0], timeout=90, tag=ROWS_TAG, log=log)
                assert trace.info.tags[ROWS_TAG] == "1"
                assert [r["row"] for r in trace.data.spans[0].outputs["predictions"]] == [0]
                assert "spans are written as trace artifacts" in log.read_text()
        assert all(p["label"] in CLASSES for p in predictions)
    finally:
        mlflow.set_tracking_uri(tracked_study.tracking_uri)
        server.stop()


def test_a_traced_server_stopped_by_sigterm_accounts_for_every_request(tracking_uri: str, tmp_path: Path) -> None:
    """`mlflow models serve` with tracing on, its whole process group sent SIGTERM at once (as systemd and Ctrl-C
    do: the CLI, uvicorn and the trace writer alike): uvicorn drains, the tracer closes, the writer writes what it
    holds and records its final coverage; the server's final counts in its log and the coverage run agree, and every
    request is traced, or lost with its reason."""
    import contextlib
    import os
    import signal

    from newscat.names import ROLE_TAG, Role
    from newscat.serving.coverage import Coverage
    from newscat.serving.tracing import CLOSE_S
    from newscat.tracking.models import log_classifier_model
    from tests.helpers import fresh_classifier

    classifier = fresh_classifier(tmp_path / "classifier", max_length=8)
    with mlflow.start_run():
        model_id = log_classifier_model(classifier, name="tiny", step=0, params={}, tags={})
    env = {**tool_env(tracking_uri), **TRACING}
    port = free_port()
    log = tmp_path / "serve-stopped.log"
    command = ["mlflow", "models", "serve", "-m", f"models:/{model_id}", "--env-manager", "local"]
    with log.open("w") as out:
        cli = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the CLI, uvicorn and the writer
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert cli.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        _traced_answer(url, HEADLINES[:1])
        predictions = _answers_at_once(url, 20)
        assert all(p["prediction_id"] is not None for p in predictions)
        os.killpg(cli.pid, signal.SIGTERM)
        cli.wait(CLOSE_S + 20)
        assert end_group(cli.pid, CLOSE_S + 20), log.read_text()[-3000:]  # every process of the group ended
    finally:
        if cli.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(30)
    text = log.read_text()
    assert "the trace writer got SIGTERM" in text and "final coverage recorded" in text, text[-3000:]
    experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = mlflow.search_runs(
        [experiment], filter_string=f"tags.`{ROLE_TAG}` = '{Role.TRACE_COVERAGE}'", output_format="list"
    )
    coverage = Coverage.from_metrics(run.data.metrics)
    assert run.info.status == "FINISHED" and coverage.pending == 0 and coverage.traced >= 21, coverage
    (report,) = [line for line in text.splitlines() if "lost traces; requests since start: " in line][-1:]
    counts = {what: int(n) for n, what in re.findall(r"(\d+) ([^,;]+)", report.split("requests since start: ")[1])}
    assert sum(counts.values()) == coverage.served and counts.get("traced", 0) == coverage.traced, (report, coverage)
