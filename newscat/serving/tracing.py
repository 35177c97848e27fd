"""Request tracing of the served model: one MLflow trace per request, written off the request path.

Off by default; `NEWSCAT_TRACING=on` (read when the model loads) turns it on. A traced request costs its handler
one span start, inside pyfunc's `predict` (so MLflow links the trace to the model id an MLmodel file records; where
it records none, as newscat's do, the tracer links it to the LoggedModel that NEWSCAT_TRACE_MODEL_URI names).
Everything else (per-text records, token counts, the write to the tracking store) happens on one tracer thread,
within a CPU budget, so a slow or unreachable tracking store never slows or fails an answer. Requests the tracer
cannot take (budget spent, queue full, store not reached yet) are answered untraced and counted in the log.

Shipped inside every logged model: only mlflow, numpy, pandas and the standard library are imported here.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import random
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.context import get_prediction_context

TRACING_ENV = "NEWSCAT_TRACING"  # on | off (default)
SAMPLING_ENV = "NEWSCAT_TRACE_SAMPLING"  # share of requests traced, 0 < x <= 1 (default 1)
TEXTS_ENV = "NEWSCAT_TRACE_TEXTS"  # on: the texts themselves go into the traces (default off: digests only)
# Experiment the traces go to (created if missing); unset: the served LoggedModel's own experiment, whose model
# page lists them in its Traces tab (the UI shows a model's traces from its own experiment only).
EXPERIMENT_ENV = "NEWSCAT_TRACE_EXPERIMENT"
MODEL_URI_ENV = "NEWSCAT_TRACE_MODEL_URI"  # models:/name/version, models:/name@alias or models:/m-<id>
CPU_ENV = "NEWSCAT_TRACE_CPU"  # share of one CPU the tracer may spend (default 0.02)
DEFAULT_EXPERIMENT = "newscat-serving"  # where no served model is named (no NEWSCAT_TRACE_MODEL_URI)
DEFAULT_CPU_SHARE = 0.02

SPAN_NAME = "newscat.predict"
SPAN_TYPE = "CLASSIFIER"
PREDICTION_ID_COLUMN = "prediction_id"
# Trace tags: what feedback checks a label against, and which registered version answered.
CLASSES_TAG = "newscat.classes"  # JSON list of the class names, in output order
ROWS_TAG = "newscat.rows"  # texts in the request
REGISTERED_MODEL_TAG = "newscat.registered_model"
REGISTERED_VERSION_TAG = "newscat.registered_version"
MODEL_ID_METADATA = "mlflow.modelId"  # the trace metadata that search_traces(model_id=...) and the UI read

QUEUE_SIZE = 64  # requests waiting for the tracer thread (or being written); beyond, untraced (counted)
LOG_EVERY_S = 60.0  # the tracer's counts go to the log at most this often, and only when they changed
RETRY_SETUP_S = 30.0  # how often an unreachable tracking store is tried again for the experiment
BURST_S = 10.0  # the CPU budget saved up while idle covers at most this many seconds of it
PROBABILITY_DIGITS = 6  # keeps traces small; 1e-6 is far below any decision made on them
_EXPORT_LOGGER = "mlflow.tracing.export.mlflow_v3"  # where MLflow reports a trace it could not write


@dataclass(frozen=True)
class TraceSettings:
    """The tracing switches, as the operator set them in the server's environment."""

    sampling: float = 1.0
    texts: bool = False
    experiment: str | None = None  # None: the served model's experiment (DEFAULT_EXPERIMENT without a model)
    model_uri: str | None = None
    cpu_share: float = DEFAULT_CPU_SHARE

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
            cpu_share=_share(env, CPU_ENV, DEFAULT_CPU_SHARE, upper=None),
        )


def _switch(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "off", "0", "false", "no"):
        return False
    if value in ("on", "1", "true", "yes"):
        return True
    raise _invalid(f"{name}={value!r}: set on or off")


def _share(env: Mapping[str, str], name: str, default: float, upper: float | None = 1.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and (upper is None or value <= upper) and math.isfinite(value)):
        bound = f"0 < x <= {upper:g}" if upper is not None else "x > 0"
        raise _invalid(f"{name}={raw!r}: give a number, {bound}")
    return value


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
class _Job:
    span: Any  # mlflow LiveSpan, opened on the request path
    texts: list[str]
    probabilities: np.ndarray
    truncated: np.ndarray
    end_ns: int
    request_cpu_s: float


class Tracer:
    """Turns answered requests into MLflow traces on one thread, within a share of one CPU.

    `record` runs on the request path: it decides (sampling, budget, room in the queue), opens the span and hands
    the rest over. The thread builds the per-text records, ends the span and so writes the trace (MLflow's own
    async export is turned off in this process, so the write's cost and failure are the tracer's to see and
    count). Dropping the tracer ends its thread.
    """

    def __init__(
        self,
        settings: TraceSettings,
        *,
        label_names: Sequence[str],
        token_counts: Callable[[list[str]], tuple[list[int], list[int]]],  # tokens read, unknown ones
        attributes: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.label_names = list(label_names)
        self._token_counts = token_counts
        self._attributes = dict(attributes or {})
        self._log = log or _stderr
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._slots = threading.BoundedSemaphore(QUEUE_SIZE)  # taken before a span opens, so a put never fails
        self._lock = threading.Lock()
        self._credit = settings.cpu_share * BURST_S  # CPU seconds the tracer may spend now
        self._refilled = time.monotonic()
        self._random = random.Random()
        self.counts: Counter[str] = Counter()
        self.last_error = ""
        self.experiment_id: str | None = None  # set by the thread once the store answered
        self._tags: dict[str, str] = {CLASSES_TAG: json.dumps(self.label_names)}
        self._model_metadata: dict[str, str] | None = None  # the served LoggedModel, where MLflow cannot tell
        _synchronous_export()
        self._thread = threading.Thread(target=_run, args=(weakref.ref(self),), name="newscat-tracer", daemon=True)
        self._thread.start()
        atexit.register(_at_exit, weakref.ref(self))

    # -- the request path: cheap decisions, one span start, a put -----------------------------------------------
    def record(
        self, texts: list[str], probabilities: np.ndarray, truncated: np.ndarray, *, start_ns: int
    ) -> list[str] | None:
        """The prediction ids of a request answered now (None: not traced). Never raises."""
        try:
            return self._record(texts, probabilities, truncated, start_ns)
        except Exception as exc:  # tracing must never fail an answer
            self._count("lost", f"{type(exc).__name__}: {exc}")
            return None

    def _record(
        self, texts: list[str], probabilities: np.ndarray, truncated: np.ndarray, start_ns: int
    ) -> list[str] | None:
        if self.settings.sampling < 1.0 and self._random.random() >= self.settings.sampling:
            self._count("not sampled")
            return None
        if self.experiment_id is None:
            self._count("lost: tracking store not reached yet")
            return None
        if not self._take_credit():
            self._count("not traced: CPU budget spent")
            return None
        if not self._slots.acquire(blocking=False):
            self._count("lost: queue full (tracking store slow or down)")
            return None
        try:
            began = time.thread_time()
            span = mlflow.start_span_no_context(
                SPAN_NAME,
                span_type=SPAN_TYPE,
                inputs={"rows": len(texts)},
                attributes=self._attributes,
                tags={**self._tags, ROWS_TAG: str(len(texts))},
                metadata=self._model_metadata if not _context_model_id() else None,
                experiment_id=self.experiment_id,
                start_time_ns=start_ns,
            )
        except BaseException:
            self._slots.release()
            raise
        trace_id = getattr(span, "trace_id", None)
        if not trace_id or not trace_id.startswith("tr-"):  # a no-op span: MLflow's own sampling or tracing off
            self._slots.release()
            self._count("not traced: MLflow tracing disabled or sampled out")
            return None
        self._queue.put(_Job(span, texts, probabilities, truncated, time.time_ns(), time.thread_time() - began))
        return prediction_ids(trace_id, len(texts))

    def _take_credit(self) -> bool:
        with self._lock:
            now = time.monotonic()
            cap = self.settings.cpu_share * BURST_S
            self._credit = min(cap, self._credit + (now - self._refilled) * self.settings.cpu_share)
            self._refilled = now
            return self._credit > 0

    def _spend(self, cpu_s: float) -> None:
        with self._lock:
            self._credit -= cpu_s

    def _count(self, what: str, error: str = "") -> None:
        with self._lock:
            self.counts[what] += 1
            if error:
                self.last_error = error

    # -- the tracer thread --------------------------------------------------------------------------------------
    def setup(self) -> bool:
        """Find or create the experiment and resolve the served model; False while the store is unreachable."""
        client = mlflow.MlflowClient()
        try:
            served = _served_model(client, self.settings.model_uri) if self.settings.model_uri else {}
            model_id = served.pop(MODEL_ID_METADATA, None)
            experiment_id = _trace_experiment(client, self.settings.experiment, model_id)
            experiment = client.get_experiment(experiment_id).name
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        self._tags = {**self._tags, **served}
        if model_id and not os.environ.get("MLFLOW_ACTIVE_MODEL_ID"):  # an operator's active model wins, as in MLflow
            self._model_metadata = {MODEL_ID_METADATA: model_id}
        self.experiment_id = experiment_id  # last: `record` starts tracing when this is set
        model = f", model {model_id}" if model_id else ""
        if REGISTERED_MODEL_TAG in served:
            model += f" ({served[REGISTERED_MODEL_TAG]} version {served[REGISTERED_VERSION_TAG]})"
        self._log(
            f"newscat tracing on: experiment {experiment!r} (id {experiment_id}){model}, sampling "
            f"{self.settings.sampling:g}, texts {'kept' if self.settings.texts else 'not kept (SHA-256 only)'}, "
            f"CPU budget {self.settings.cpu_share:g} of one CPU"
        )
        return True

    def write(self, job: _Job) -> None:
        """Build the per-text records, end the span and so write the trace; its CPU time comes off the budget."""
        began = time.thread_time()
        with _ExportFailures() as failures:
            try:
                tokens, unknown = self._token_counts(job.texts)
                records = text_records(
                    job.texts,
                    job.probabilities,
                    job.truncated,
                    tokens,
                    self.label_names,
                    unknown=unknown,
                    keep_texts=self.settings.texts,
                )
                job.span.end(outputs={"predictions": records}, end_time_ns=job.end_ns)
            except Exception as exc:
                failures.errors.append(f"{type(exc).__name__}: {exc}")
        self._spend(job.request_cpu_s + time.thread_time() - began)
        if failures.errors:
            self._count("lost: the tracking store refused or did not answer", failures.errors[-1])
        else:
            self._count("traced")

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Whether every accepted request was written (or lost) within `timeout` seconds (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def report(self) -> str:
        """One line of counts since the start (lost traces first)."""
        with self._lock:
            counts = dict(self.counts)
        lost = sum(n for what, n in counts.items() if what.startswith("lost"))
        parts = [f"{n} {what}" for what, n in sorted(counts.items())]
        error = f"; last error: {self.last_error}" if lost and self.last_error else ""
        return f"newscat tracing: {lost} lost traces; requests since start: {', '.join(parts) or 'none'}{error}"


def _trace_experiment(client: mlflow.MlflowClient, name: str | None, model_id: str | None) -> str:
    """The id of the experiment traces go to: the one named, else the served LoggedModel's, else the default."""
    if name is None and model_id:
        return client.get_logged_model(model_id).experiment_id
    return _experiment_id(client, name or DEFAULT_EXPERIMENT)


def _experiment_id(client: mlflow.MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another server process created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def _served_model(client: mlflow.MlflowClient, model_uri: str) -> dict[str, str]:
    """The registered name and version behind `model_uri` (as trace tags) and the LoggedModel id (as the trace
    metadata MLflow links traces to models by)."""
    name, version, alias = registered_model(model_uri)
    if not name:  # models:/m-<id>
        return {MODEL_ID_METADATA: model_uri[len("models:/") :].strip("/")}
    found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    # A version registered from models:/m-... may read model_id None on some stores; its source holds the id.
    model_id = found.model_id or (found.source[len("models:/") :] if found.source.startswith("models:/m-") else "")
    served = {REGISTERED_MODEL_TAG: name, REGISTERED_VERSION_TAG: str(found.version)}
    return {**served, MODEL_ID_METADATA: model_id} if model_id else served


def _run(ref: weakref.ref[Tracer]) -> None:
    """The tracer thread: writes traces until the tracer is dropped, and puts its counts in the log (the first
    line as soon as there is something to count, then at most every LOG_EVERY_S, when they changed)."""
    logged, reported, setup = 0.0, "", None
    _yield_cpu()
    while True:
        tracer = ref()
        if tracer is None:
            return
        if tracer.experiment_id is None and (setup is None or not setup.is_alive()):
            # Its own thread: an unreachable store may hold it for MLflow's HTTP retries (minutes by default),
            # and the counts must still reach the log meanwhile.
            setup = threading.Thread(target=_setup, args=(tracer,), name="newscat-tracer-setup", daemon=True)
            setup.start()
        try:
            job = tracer._queue.get(timeout=1.0)
        except queue.Empty:
            job = None
        if job is not None:
            try:
                tracer.write(job)
            finally:
                tracer._slots.release()
                tracer._queue.task_done()
        if time.monotonic() - logged >= LOG_EVERY_S and tracer.counts:
            line = tracer.report()
            if line != reported:
                tracer._log(line)
                reported = line
                logged = time.monotonic()
        del tracer, job


def _yield_cpu() -> None:
    """Give the calling thread the lowest CPU priority (Linux keeps one per thread): when the cores are busy with
    forward passes, the scheduler runs them first and the tracer in what is left. (A thread's CPU time is all the
    budget counts; its writes still stall a forward pass split over both cores of a small machine.)"""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: the budget alone bounds it
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _at_exit(ref: weakref.ref[Tracer]) -> None:
    """At the server's shutdown: a few seconds to write what is queued, then the final counts."""
    tracer = ref()
    if tracer is not None and tracer.counts:
        tracer.wait_idle(timeout=5.0)
        tracer._log(tracer.report())


def _setup(tracer: Tracer) -> None:
    """Find the experiment and the registered version; on failure, say so and wait before the next try."""
    if not tracer.setup():
        tracer._log(
            f"newscat tracing: the tracking store did not answer ({tracer.last_error}); requests are answered "
            f"untraced, retrying in {RETRY_SETUP_S:.0f} s"
        )
        time.sleep(RETRY_SETUP_S)


class _ExportFailures(logging.Filter):
    """Collects what MLflow's exporter reports (and would only log) while this thread writes a trace: with
    synchronous export, a warning there means the trace was not written."""

    def __enter__(self) -> _ExportFailures:
        self.errors: list[str] = []
        self._thread = threading.get_ident()
        logging.getLogger(_EXPORT_LOGGER).addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(_EXPORT_LOGGER).removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self._thread or record.levelno < logging.WARNING:
            return True
        self.errors.append(record.getMessage())
        return False  # counted and shown in the tracer's own summary line instead


def _synchronous_export() -> None:
    """MLflow writes a trace when its span ends, on the thread that ends it (here, the tracer's), instead of on
    its own pool: the tracer then sees the write's cost (for the budget) and its failure (for the count).

    And trace ids come from a private random generator: OpenTelemetry's default draws them from the global `random`,
    so a process that seeds it (transformers' `set_seed` in every training run does) repeats the trace ids of an
    earlier run, and a repeated id lands on another request's trace in the store."""
    wanted = {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false", "MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR": "true"}
    if any(os.environ.get(name, "").lower() != value for name, value in wanted.items()):
        os.environ.update(wanted)
        mlflow.tracing.reset()  # the tracer provider is rebuilt, with these settings, at the next span


def _context_model_id() -> str | None:
    """The model id pyfunc's `predict` gave MLflow's prediction context: set where the model's MLmodel file records
    one (MLflow then links the trace itself); newscat's logged models so far record none."""
    context = get_prediction_context()
    return context.model_id if context is not None else None


def _stderr(line: str) -> None:
    # The scoring server configures no logging: the model's lines go to its console like the engine line.
    print(line, file=sys.stderr, flush=True)
