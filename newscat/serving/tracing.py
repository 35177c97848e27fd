"""Request tracing of the served model: one MLflow trace per request, written by a child process.

Off by default; `NEWSCAT_TRACING=on` (read when the model loads) turns it on, in MLflow's scoring server only
(`mlflow models serve`, whose processes carry `__pyfunc_model_path__`): a model loaded in-process (evaluate, promote,
predict, a notebook, Spark's local workers) never traces, so test rows and batch jobs never pass for live traffic.
A traced request costs its handler a
random trace id and a put on a queue: the id goes into the answer at once, and everything else (token counts,
per-text records, the write to the tracking store) happens in the trace writer (`newscat.serving.trace_writer`), a
child process at nice 10 with its own interpreter. So the writer's Python never holds the
server's GIL, the scheduler gives the forward passes most of a busy CPU without starving the writer, and a slow or
unreachable tracking store
never slows or fails an answer. What the writer cannot keep up with (and what is answered before it reached the
store) waits in a bounded backlog; requests beyond it go untraced and are counted in the log.

At the server's exit (and on SIGTERM, see `close_on_sigterm`) the tracer closes: later requests go untraced, what is
queued goes to the writer, which writes what it holds within WRITER_DEADLINE_S, counts the rest lost, records its
final coverage and exits; a writer past its deadline is stopped, and whatever it never accounted for is counted lost
here. Every request the server answered ends traced, not sampled, or lost with its reason.

Traces are linked to the served LoggedModel (the model id pyfunc's prediction context names where the MLmodel file
records one, else the id the model's own settings record since newscat wrote it there, else the one
NEWSCAT_TRACE_MODEL_URI resolves to) and tagged with the registered name and version of the files served: after an
alias moves, a running server's traces still name the version it serves.

Shipped inside every logged model: only mlflow, numpy, pandas and the standard library are imported here.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import math
import os
import pickle
import queue
import random
import secrets
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.context import get_prediction_context

from newscat.serving.coverage import COVERAGE_EVERY_S, NOT_SAMPLED, SERVED
from newscat.serving.mlflow_internals import SCORING_SERVER_MODEL_PATH_ENV
from newscat.serving.pacing import Pacing

TRACING_ENV = "NEWSCAT_TRACING"  # on | off (default)
SAMPLING_ENV = "NEWSCAT_TRACE_SAMPLING"  # share of requests traced, 0 < x <= 1 (default 1)
TEXTS_ENV = "NEWSCAT_TRACE_TEXTS"  # on: the texts themselves go into the traces (default off: digests only)
# Experiment the traces go to (created if missing); unset: the served LoggedModel's own experiment, whose model
# page lists them in its Traces tab (the UI shows a model's traces from its own experiment only).
EXPERIMENT_ENV = "NEWSCAT_TRACE_EXPERIMENT"
# Optional: models:/name/version, models:/name@alias or models:/m-<id>; a model logged by newscat knows its own id.
MODEL_URI_ENV = "NEWSCAT_TRACE_MODEL_URI"
# Set by MLflow's scoring server (`mlflow models serve`, and its container) in the processes that load the model.
SCORING_SERVER_ENV = SCORING_SERVER_MODEL_PATH_ENV
BACKLOG_ENV = "NEWSCAT_TRACE_BACKLOG"  # requests waiting to be written, at most (default 10000)
CONCURRENCY_ENV = "NEWSCAT_TRACE_CONCURRENCY"  # trace writes in flight to the tracking store at once (default 8)
WAIT_ENV = "NEWSCAT_TRACE_WAIT_MS"  # a request waits at most this long for the writer to catch up (0: never waits)
DEFAULT_EXPERIMENT = "newscat-serving"  # where no served model is named (no NEWSCAT_TRACE_MODEL_URI)
DEFAULT_BACKLOG = 10_000  # about 1 KB each with digests only: 10 MB of memory while the store lags
# `start_trace` (the one call that links a trace to its model) is a round trip per trace: one at a time, a remote
# store's latency caps the writer, several in flight keep it busy (docs/serving.md, benchmarks/trace_store.py).
DEFAULT_CONCURRENCY = 8

SPAN_NAME = "newscat.predict"
SPAN_TYPE = "CLASSIFIER"
PREDICTION_ID_COLUMN = "prediction_id"
# Trace tags: what feedback checks a label against, and which registered version answered.
CLASSES_TAG = "newscat.classes"  # JSON list of the class names, in output order
ROWS_TAG = "newscat.rows"  # texts in the request
REGISTERED_MODEL_TAG = "newscat.registered_model"
REGISTERED_VERSION_TAG = "newscat.registered_version"
MODEL_ID_METADATA = "mlflow.modelId"  # the trace metadata that search_traces(model_id=...) and the UI read

QUEUE_SIZE = 1024  # requests handed over but not yet in the writer's pipe; beyond, untraced (counted)
FEED_EVERY_S = 0.1  # how often the queued requests go to the writer, together
LOG_EVERY_S = 60.0  # the tracer's counts go to the log at most this often, and only when they changed
PROBABILITY_DIGITS = 6  # keeps traces small; 1e-6 is far below any decision made on them
FRAME = struct.Struct("<I")  # each message to the writer: its length, then a pickle
# The writer's shutdown (its first SIGTERM or SIGINT, or the end of its input, which is how the server stops it): what
# it accepted is written within WRITER_DEADLINE_S, the rest counted lost; its final coverage record then gets
# FINAL_RECORD_S. Together 7 s: inside the shortest stop timeout in common use, `docker stop`'s 10 s before SIGKILL
# (Kubernetes gives 30 s, systemd 90 s), with room for the server's own drain; and, with the server idle by then, time
# for the writer to write hundreds of requests to a store that answers.
WRITER_DEADLINE_S = 5.0
FINAL_RECORD_S = 2.0
KILL_AFTER_S = 1.0  # a writer past its deadline gets SIGTERM (its second stop: it exits at once), then SIGKILL
CLOSE_S = WRITER_DEADLINE_S + FINAL_RECORD_S + 1.0  # how long `Tracer.close` waits for the writer to end by itself
STOPPED_LOST = "lost: the trace writer stopped (see the log)"  # requests answered while the writer stops or is gone
UNREPORTED_LOST = "lost: the trace writer ended without accounting for them"  # killed, or died, holding them
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what stops the writer (see `newscat.serving.trace_writer`)


@dataclass(frozen=True)
class TraceSettings:
    """The tracing switches, as the operator set them in the server's environment."""

    sampling: float = 1.0
    texts: bool = False
    experiment: str | None = None  # None: the served model's experiment (DEFAULT_EXPERIMENT without a model)
    model_uri: str | None = None
    backlog: int = DEFAULT_BACKLOG
    concurrency: int = DEFAULT_CONCURRENCY
    wait_ms: int = 0  # pacing (newscat/serving/pacing.py): 0 never slows an answer for tracing

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TraceSettings | None:
        """The settings, or None when tracing is off; a bad value fails the model's load with what to set."""
        env = os.environ if env is None else env
        if not _switch(env, TRACING_ENV):
            return None
        model_uri = env.get(MODEL_URI_ENV, "").strip() or None
        if model_uri is not None:
            registered_model(model_uri)  # a malformed URI fails at startup, not in the tracer thread
        return cls(
            sampling=_share(env, SAMPLING_ENV, 1.0),
            texts=_switch(env, TEXTS_ENV),
            experiment=env.get(EXPERIMENT_ENV, "").strip() or None,
            model_uri=model_uri,
            backlog=_count(env, BACKLOG_ENV, DEFAULT_BACKLOG),
            concurrency=_count(env, CONCURRENCY_ENV, DEFAULT_CONCURRENCY),
            wait_ms=_millis(env, WAIT_ENV),
        )


def in_scoring_server(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is MLflow's scoring server loading its model (the only place that traces)."""
    return bool((os.environ if env is None else env).get(SCORING_SERVER_ENV))


def tracing_asked(env: Mapping[str, str] | None = None) -> bool:
    """Whether NEWSCAT_TRACING is set to anything but off (an in-process load says it traces nothing)."""
    value = (os.environ if env is None else env).get(TRACING_ENV, "").strip().lower()
    return value not in ("", "off", "0", "false", "no")


def _switch(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "off", "0", "false", "no"):
        return False
    if value in ("on", "1", "true", "yes"):
        return True
    raise _invalid(f"{name}={value!r}: set on or off")


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value <= 1 and math.isfinite(value)):
        raise _invalid(f"{name}={raw!r}: give a number, 0 < x <= 1")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise _invalid(f"{name}={raw!r}: give a whole number of requests, at least 1")
    return int(raw)


def _millis(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 60_000:
        raise _invalid(f"{name}={raw!r}: give whole milliseconds, 0 to 60000 (0: requests never wait)")
    return int(raw)


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def registered_model(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of `models:/name/version` or `models:/name@alias`; ("", None, None) for the URI of
    a LoggedModel, `models:/m-<id>`."""
    help_ = f"{MODEL_URI_ENV}={model_uri!r}: give models:/<name>/<version>, models:/<name>@<alias> or models:/m-<id>"
    if not model_uri.startswith("models:/"):
        raise _invalid(help_)
    rest = model_uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return name, None, alias
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, version, None
    elif rest.startswith("m-"):
        return "", None, None
    raise _invalid(help_)


def prediction_ids(trace_id: str, rows: int) -> list[str]:
    """The id of each answer of a traced request: `<trace id>:<row>`."""
    return [f"{trace_id}:{row}" for row in range(rows)]


def parse_prediction_id(value: str) -> tuple[str, int]:
    """(trace id, row) of a prediction id; ValueError names what is wrong."""
    trace_id, sep, row = str(value).strip().rpartition(":")
    if not sep or not trace_id or not row.isdigit():
        raise ValueError(f"{value!r} is not a prediction id (<trace id>:<row>, as the server answered)")
    return trace_id, int(row)


def text_records(
    texts: Sequence[str],
    probabilities: np.ndarray,
    truncated: Sequence[bool],
    tokens: Sequence[int],
    label_names: Sequence[str],
    *,
    unknown: Sequence[int] | None = None,
    keep_texts: bool = False,
) -> list[dict[str, Any]]:
    """What a trace keeps per text: its SHA-256 (UTF-8), characters, tokens read and how many of them the
    tokenizer did not know, truncated flag, the label, score and class probabilities; the text itself only with
    `keep_texts`."""
    records = []
    for row, text in enumerate(texts):
        probs = probabilities[row]
        best = int(np.argmax(probs))
        record = {
            "row": row,
            "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
            "chars": len(text),
            "tokens": int(tokens[row]),
            "unknown": int(unknown[row]) if unknown is not None else 0,
            "truncated": bool(truncated[row]),
            "label": label_names[best],
            "score": round(float(probs[best]), PROBABILITY_DIGITS),
            "probabilities": {n: round(float(p), PROBABILITY_DIGITS) for n, p in zip(label_names, probs, strict=True)},
        }
        if keep_texts:
            record["text"] = text
        records.append(record)
    return records


@dataclass(frozen=True)
class WriterConfig:
    """What the trace writer is started with (its first message): the switches, how to read the answers, where to
    write."""

    settings: TraceSettings
    label_names: list[str]
    tokenizer: str  # a folder with the served model's tokenizer.json (token counts are made in the writer)
    max_length: int
    attributes: dict[str, str]
    tracking_uri: str
    model_id: str | None = None  # the LoggedModel the served files record (None: logged before newscat wrote it)
    coverage_every_s: float = COVERAGE_EVERY_S  # how often the writer records its coverage totals in the store


class Tracer:
    """Hands answered requests to the trace writer process and keeps count of what became of them.

    `record` runs on the request path: it decides (sampling, store reached, room in the queue), draws the trace id
    and queues the request. A feeder thread writes what is queued into the writer's pipe every FEED_EVERY_S, as one
    message (blocking there, outside the GIL, while the writer lags); a listener thread reads what the writer says:
    ready, log lines, its counts.
    `close` (run at the server's exit) ends it with every request accounted for; dropping the tracer closes the
    pipe, and the writer then writes what it holds within its deadline and exits.
    """

    def __init__(
        self,
        settings: TraceSettings,
        *,
        label_names: Sequence[str],
        tokenizer: Path,
        max_length: int,
        attributes: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        model_id: str | None = None,
        coverage_every_s: float = COVERAGE_EVERY_S,
    ) -> None:
        self.settings = settings
        self.label_names = list(label_names)
        self._log = log or _stderr
        self._queue: queue.Queue[tuple] = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when the writer reports what it settled
        self._pacing = Pacing(settings.wait_ms / 1000, settings.backlog)
        self._random = random.Random()
        self._here: Counter[str] = Counter()  # decided on the request path
        self._written: dict[str, int] = {}  # the writer's counts: traced, or lost there
        self._accepted = 0  # requests queued for the writer, less those the feeder could not hand over
        self._served = 0  # every request `record` saw: what the writer's coverage record counts as served
        self._stopped = False  # set under the lock: from then on nothing is queued
        self._close_lock = threading.Lock()
        self._closed: bool | None = None  # `close`'s answer, once closed
        self.last_error = ""
        self.experiment_id: str | None = None  # set once the writer reached the store
        self._writer_done = False  # the writer sent its final counts
        config = WriterConfig(
            settings,
            self.label_names,
            str(tokenizer),
            max_length,
            dict(attributes or {}),
            mlflow.get_tracking_uri(),
            model_id,
            coverage_every_s=coverage_every_s,
        )
        self._process = _start_writer(config)
        stop = threading.Event()
        self._stop = stop
        ref = weakref.ref(self)
        self._feeder = threading.Thread(
            target=_feed, args=(ref, self._queue, stop, self._process.stdin), name="newscat-tracer-feed", daemon=True
        )
        self._listener = threading.Thread(
            target=_listen, args=(ref, self._process.stdout), name="newscat-tracer-listen", daemon=True
        )
        self._feeder.start()
        self._listener.start()
        weakref.finalize(self, stop.set)
        atexit.register(_at_exit, ref)

    @property
    def writer_pid(self) -> int:
        return self._process.pid

    @property
    def counts(self) -> Counter[str]:
        """What became of each request since the start: traced, or why not."""
        with self._lock:
            return self._here + Counter(self._written)

    # -- the request path: cheap decisions, a random id, a put -------------------------------------------------
    def record(
        self, texts: list[str], probabilities: np.ndarray, truncated: np.ndarray, *, start_ns: int
    ) -> list[str] | None:
        """The prediction ids of a request answered now (None: not traced). Never raises."""
        try:
            return self._record(texts, probabilities, truncated, start_ns)
        except Exception as exc:  # tracing must never fail an answer (raised before anything was counted)
            with self._lock:
                self._served += 1
                self._here["lost"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            return None

    def _record(
        self, texts: list[str], probabilities: np.ndarray, truncated: np.ndarray, start_ns: int
    ) -> list[str] | None:
        sampled = self.settings.sampling >= 1.0 or self._random.random() < self.settings.sampling
        job, ids = None, None
        # Queued before the writer reached the store too: its backlog holds them until then (lost only beyond it).
        if sampled and not self._stopped:
            trace_id = "tr-" + secrets.token_hex(16)  # the OS's randomness: a seeded `random` cannot repeat it
            job = (trace_id, start_ns, time.time_ns(), list(texts), probabilities, truncated, _context_model_id())
            ids = prediction_ids(trace_id, len(texts))
        # One locked step: the request counted served and its fate decided together (a counts snapshot never holds
        # one without the other), and nothing queued once `close` set `_stopped`.
        with self._lock:
            if job is not None and self._pacing.holds(self._on_the_way()):
                self._wait_for_room()
            self._served += 1
            if not sampled:
                untraced = NOT_SAMPLED
            elif self._stopped:
                untraced = STOPPED_LOST
            else:
                try:
                    self._queue.put_nowait(job)
                except queue.Full:
                    untraced = "lost: queue full (tracking store slow or down)"
                else:
                    self._accepted += 1
                    return ids
            self._here[untraced] += 1
        return None

    def _on_the_way(self) -> int:
        """Requests handed over whose fate the writer has not reported yet (lock held)."""
        return self._accepted - sum(self._written.values())

    def _wait_for_room(self) -> None:
        """Pacing (lock held; released while waiting): until the writer caught up, at most `wait_s`."""
        began = time.monotonic()
        self._room.wait_for(
            lambda: self._stopped or not self._pacing.holds(self._on_the_way()), timeout=self._pacing.wait_s
        )
        self._pacing.count(time.monotonic() - began)

    def request_counts(self) -> dict[str, int]:
        """What the writer's coverage record needs from the request path: the requests served, and those left
        untraced here (not sampled, or lost before reaching the writer)."""
        with self._lock:
            return {SERVED: self._served, **self._here}

    # -- what the writer says ----------------------------------------------------------------------------------
    def _message(self, message: dict[str, Any]) -> None:
        if "counts" in message:
            with self._lock:
                self._written = dict(message["counts"])
                self.last_error = message.get("error") or self.last_error
                self._pacing.written(sum(self._written.values()))
                self._room.notify_all()
        if "final" in message:
            self._writer_done = True
        if "ready" in message:
            self.experiment_id = message["ready"]  # `record` starts tracing when this is set
        if "stopping" in message:  # the writer got a signal: new requests are no longer handed over
            with self._lock:
                self._stopped = True
                self._room.notify_all()
        if "log" in message:
            self._log(message["log"])

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Whether every accepted request was written (or lost) within `timeout` seconds (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if sum(self._written.values()) >= self._accepted:
                    return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float = CLOSE_S) -> bool:
        """Stop tracing, with every request accounted for: later requests are counted untraced (STOPPED_LOST);
        what is queued goes to the writer, then the tracer's final counts and the end of its input; the writer
        writes what it holds within WRITER_DEADLINE_S, counts the rest lost, records its final coverage and
        reports its final counts. A writer still running after `timeout` seconds gets SIGTERM (its second stop: it
        counts the rest lost and exits at once), KILL_AFTER_S later SIGKILL; what it never accounted for is counted
        lost here (UNREPORTED_LOST). Whether the writer ended by itself in time. Closing again answers the same."""
        with self._close_lock:
            if self._closed is None:
                self._closed = self._close(timeout)
            return self._closed

    def _close(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopped = True
            self._room.notify_all()  # paced requests stop waiting
        self._stop.set()
        self._feeder.join(max(0.0, deadline - time.monotonic()))
        try:
            self._process.wait(max(0.0, deadline - time.monotonic()))
            in_time = True
        except subprocess.TimeoutExpired:
            in_time = False
            for stop in (self._process.terminate, self._process.kill):
                stop()
                try:
                    self._process.wait(KILL_AFTER_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
            self._process.wait()
            self._feeder.join(KILL_AFTER_S)  # a feeder blocked on a full pipe fails now, counting its batch lost
        self._listener.join(KILL_AFTER_S)  # the writer's last messages: its final counts
        with self._lock:
            unreported = self._accepted - sum(self._written.values())
            if unreported > 0:
                self._here[UNREPORTED_LOST] += unreported
                self._accepted -= unreported
        if self._here or self._written:
            self._log(self.report())
        return in_time

    def report(self) -> str:
        """One line of counts since the start (lost traces first)."""
        counts = dict(self.counts)
        lost = sum(n for what, n in counts.items() if what.startswith("lost"))
        parts = [f"{n} {what}" for what, n in sorted(counts.items())]
        error = f"; last error: {self.last_error}" if lost and self.last_error else ""
        pacing = self._pacing
        paced = (
            f"; {pacing.waited} waited for the writer ({1000 * pacing.waited_s / pacing.waited:.0f} ms on average)"
            if pacing.waited
            else ""
        )
        return f"newscat tracing: {lost} lost traces; requests since start: {', '.join(parts) or 'none'}{paced}{error}"


def _start_writer(config: WriterConfig) -> subprocess.Popen:
    """The writer process, in this interpreter's environment and import path, with this very copy of newscat first
    (the one a logged model ships, whatever else is installed)."""
    paths = [str(Path(__file__).resolve().parents[2]), *(path for path in sys.path if path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    # The writer starts with its stop signals blocked (a child inherits the mask) and unblocks them once it handles
    # them: a SIGTERM to the whole process group while it still imports (seconds, on a busy machine) then stops it
    # as any other, instead of killing it with every request it was handed.
    masks = hasattr(signal, "pthread_sigmask")  # not on Windows
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if masks else None
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "from newscat.serving.trace_writer import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
    finally:
        if masks:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    send(process.stdin, config)
    return process


def send(stream: IO[bytes], message: object) -> None:
    """One message to the writer (the config, then lists of requests): its length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(FRAME.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message `send` wrote, or None at the end of the stream."""
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    data = stream.read(FRAME.unpack(head)[0])
    return pickle.loads(data)  # our own parent process wrote it


def _feed(ref: weakref.ref[Tracer], jobs: queue.Queue[tuple], stop: threading.Event, pipe: IO[bytes]) -> None:
    """The feeder thread: every FEED_EVERY_S, the requests queued meanwhile into the writer's pipe as one message
    (one wake-up and one write per interval, not per request: on a busy server each wake-up takes the GIL and a
    core from the forward passes), until the tracer is dropped; and the counts into the log (the first line as soon
    as there is something to count, then at most every LOG_EVERY_S, when they changed); and, when they changed,
    the tracer's own counts (requests served, left untraced) to the writer, which records coverage from them."""
    logged, reported, told = 0.0, "", {}
    while not stop.is_set() or not jobs.empty():
        stop.wait(FEED_EVERY_S)
        batch = []
        with contextlib.suppress(queue.Empty):
            while len(batch) < QUEUE_SIZE:
                batch.append(jobs.get_nowait())
        if batch:
            try:
                send(pipe, batch)
            except (OSError, ValueError) as exc:  # the writer is gone: what it was handed is lost
                tracer = ref()
                if tracer is not None:
                    with tracer._lock:
                        tracer._stopped = True
                        tracer._here[STOPPED_LOST] += len(batch)
                        tracer._accepted -= len(batch)
                        tracer.last_error = f"{type(exc).__name__}: {exc}"
                del tracer
        tracer = ref()
        if tracer is not None and (counts := tracer.request_counts()) != told:
            # Sent after the requests they count: the writer's coverage record never holds more traced than served.
            with contextlib.suppress(OSError, ValueError):
                send(pipe, counts)
                told = counts
        if tracer is not None and time.monotonic() - logged >= LOG_EVERY_S and tracer.counts:
            line = tracer.report()
            if line != reported:
                tracer._log(line)
                reported, logged = line, time.monotonic()
        del tracer
    with contextlib.suppress(OSError, ValueError):
        pipe.close()  # the writer writes what it holds, then exits


def _listen(ref: weakref.ref[Tracer], pipe: IO[bytes]) -> None:
    """The listener thread: the writer's messages, one JSON line each, until it exits."""
    for line in pipe:
        tracer = ref()
        if tracer is None:
            return
        with contextlib.suppress(ValueError):
            tracer._message(json.loads(line))
        del tracer
    tracer = ref()
    if tracer is not None:
        with tracer._lock:
            tracer._stopped = True
            asked = tracer._writer_done or tracer._stop.is_set()
        if not asked:  # the writer died: say how, or its loss has no cause in the log
            tracer._log(f"newscat tracing: the trace writer died ({_exit_status(tracer._process)})")


def _exit_status(process: subprocess.Popen) -> str:
    """How a writer that closed its output ended: its exit status or signal."""
    try:
        code = process.wait(KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _at_exit(ref: weakref.ref[Tracer]) -> None:
    """At the server's exit (after its last request): the tracer closes, and the final counts go to the log."""
    tracer = ref()
    if tracer is not None:
        tracer.close()


def close_on_sigterm(tracer: Tracer) -> bool:
    """Make SIGTERM close the tracer after the server's drain and before its process ends (the model's load calls
    this in MLflow's scoring server); whether it could (not outside the main thread, nor where SIGTERM is ignored).

    Uvicorn ends a graceful shutdown (no new connections, the requests in flight answered) by restoring the SIGTERM
    handler it found and raising the signal again: with the default action the process would end there, before its
    at-exit hooks, and the tracer's queue, its final counts and the writer's final coverage record would be lost.
    - Where nothing handled SIGTERM when the model loaded (uvicorn with one worker, as `mlflow models serve` runs it,
      loads the app before it installs its handler), this handler is the one uvicorn restores and raises into: it
      closes the tracer, then ends the process by SIGTERM, as the default action would have.
    - Where the server's handler came first (uvicorn with several workers, gunicorn), this one calls it, after
      blocking SIGTERM in the main thread: uvicorn's raise then waits, the process leaves through its normal exit
      (status 0), and the at-exit hook closes the tracer. A SIGTERM sent to the process after the server restored
      the default action still ends it at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_IGN, None):
        return False
    ref = weakref.ref(tracer)

    def on_sigterm(signum: int, frame: Any) -> None:
        if callable(previous):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            previous(signum, frame)
            return
        tracer = ref()
        if tracer is not None:  # closed on a thread: this one may have been stopped inside the tracer's lock
            closing = threading.Thread(target=tracer.close, name="newscat-tracer-close", daemon=True)
            closing.start()
            closing.join(CLOSE_S + 2 * KILL_AFTER_S + 1.0)
        del tracer
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def _context_model_id() -> str | None:
    """The model id pyfunc's `predict` gave MLflow's prediction context: set where the model's MLmodel file records
    one (MLflow then links the trace itself); newscat's logged models record theirs in their settings instead."""
    context = get_prediction_context()
    return context.model_id if context is not None else None


def _stderr(line: str) -> None:
    # The scoring server configures no logging: the model's lines go to its console like the engine line.
    print(line, file=sys.stderr, flush=True)
