"""The trace writer: the child process that turns a scoring server's answered requests into MLflow traces.

`newscat.serving.tracing.Tracer` starts it with a pipe on its stdin (length-prefixed pickles: first the
`WriterConfig`, then lists of requests, one tuple each, and the tracer's own counts, a dict) and reads its messages
on its stdout (JSON lines: ready, log, counts). It records what became of the requests (served, traced, lost) in the
store too, as a coverage run that `newscat monitor` reads (`newscat.serving.coverage`).
It runs at nice WRITER_NICE, so the server's forward passes go first without starving it, and writes in batches: each
trace's info (tags, the link to the served model) with `start_trace`, `settings.concurrency` calls in flight at once
to a tracking server (one at a time to a store it writes itself: a database or a folder),
then the spans of up to BATCH requests in one `log_spans` call: the two calls MLflow's own exporter makes per trace.
Requests answered before the store was reached wait in the backlog until it is.
A store that refuses `log_spans` (a server older than 3.4, or one whose version probe, a 3-second call inside MLflow,
timed out) gets each trace's spans as the trace's artifact instead, as MLflow's exporter falls back; `log_spans` is
tried again every REPROBE_S. Requests beyond its backlog are counted lost, never waited for.

It stops on SIGTERM or SIGINT (unless started with them ignored), or at the end of its input (the server closing its
side): at the first signal it tells the server, which then hands over no new requests (those answered from then on
are counted lost there), and it writes what it holds, and what the server had answered before and was still handing
over, until WRITER_DEADLINE_S have passed; then it counts the rest lost, records its final coverage totals (given
FINAL_RECORD_S), reports its final counts to the server and exits 0. A second signal ends it at once, with
everything unwritten counted lost and reported, and no coverage record (exit status 1). Every request it read is
traced or counted lost, with its reason.

Shipped inside every logged model: only mlflow, numpy, tokenizers and the standard library are imported here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import mlflow
from mlflow.entities import Span, TraceData, TraceInfo, TraceLocation, TraceState
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import (
    TRACE_SCHEMA_VERSION,
    TRACE_SCHEMA_VERSION_KEY,
    SpanAttributeKey,
    SpansLocation,
    TraceTagKey,
)
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from newscat.serving.coverage import CoverageLog, coverage_of
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP
from newscat.serving.mlflow_internals import forget_server_version, upload_trace_data
from newscat.serving.tokens import TokenEncoder
from newscat.serving.tracing import (
    CLASSES_TAG,
    DEFAULT_EXPERIMENT,
    FINAL_RECORD_S,
    MODEL_ID_METADATA,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    ROWS_TAG,
    SPAN_NAME,
    SPAN_TYPE,
    STOP_SIGNALS,
    WRITER_DEADLINE_S,
    WriterConfig,
    receive,
    registered_model,
    text_records,
)

BATCH = 64  # requests written per `log_spans` call
REPORT_EVERY_S = 0.5  # the counts go back to the server at most this often
SPANS_WITHIN_S = 1.0  # the longest a written trace info waits for its spans
RETRY_SETUP_S = 30.0  # how often an unreachable tracking store is tried again
REPROBE_S = 300.0  # how often a store that refused `log_spans` is offered it again
PREVIEW_CHARS = 1000  # what the UI's trace list shows of a request and its answer
STORE_LOST = "lost: the tracking store refused or did not answer"
# About a tenth of a core against one busy nice-0 process per core (CFS weights 110 vs 1024).
WRITER_NICE = 10
BACKLOG_LOST = "lost: backlog full (tracking store slow or down)"
SHUTDOWN_LOST = "lost: shutdown (not written within the deadline)"


def main() -> None:
    """The process: read the config, then requests, until the server closes the pipe or a signal stops it.

    Three threads: one reads the pipe, one writes, and the main one, where Python runs signal handlers, watches the
    deadline and does the final accounting, whatever the writing thread is waiting on."""
    _lower_priority()
    messages = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # what a library prints goes to the server's log, never into the messages
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    config: WriterConfig = receive(requests)
    writer = Writer(config, lambda message: _tell(messages, message))
    writer.handle_signals()
    with contextlib.suppress(AttributeError):  # blocked by the server until now (see `_start_writer`); not Windows
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    threading.Thread(target=writer.read, args=(requests,), name="newscat-writer-read", daemon=True).start()
    writing = threading.Thread(target=writer.run, name="newscat-writer-write", daemon=True)
    writing.start()
    code = writer.supervise(writing)
    with contextlib.suppress(OSError, ValueError):
        messages.flush()
    sys.stderr.flush()
    # Not a normal interpreter exit: the writing thread may still wait on the store, the reading one on the pipe.
    os._exit(code)


class Writer:
    """Reads requests into a bounded backlog (one thread) and writes them as traces in batches (the other)."""

    def __init__(self, config: WriterConfig, send: Callable[[dict[str, Any]], None]) -> None:
        self.config = config
        self._tell_server = send
        self._send_lock = threading.Lock()  # the writing and the main thread both talk to the server
        self._jobs: deque[tuple] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self.counts: Counter[str] = Counter()
        self.error = ""
        self._reported: tuple[dict[str, int], str] | None = None
        self._encoder = TokenEncoder(Path(config.tokenizer), config.max_length)
        self._max_chars = config.max_length * CHARS_PER_TOKEN_CAP
        self._experiment_id: str | None = None
        self._client: TracingClient | None = None  # set once the store answered
        self._calls = store_calls(config.tracking_uri, config.settings.concurrency)
        self._pool = ThreadPoolExecutor(self._calls, thread_name_prefix="newscat-writer-call")
        self._tags = {CLASSES_TAG: json.dumps(config.label_names)}
        self._model_id: str | None = None  # the served LoggedModel, where pyfunc's prediction context names none
        self._artifacts_since: float | None = None  # set while spans go to trace artifacts (`log_spans` refused)
        self._request_counts: dict[str, int] = {}  # the tracer's latest: requests served, left untraced there
        self._coverage: CoverageLog | None = None  # set once there is a store and a served model to record it for
        self._coverage_at = -math.inf
        self._traced_model_id: str | None = None  # the model of the last trace (the prediction context's)
        self._coverage_lock = threading.Lock()  # the periodic record (writing thread) and the final one (main thread)
        self._in_flight = 0  # requests taken off the backlog whose fate is not counted yet
        self._signals: list[int] = []  # the stop signals received, in order (appended by the handler only)
        self._stop_at: float | None = None  # when stopping began: the first signal, or the end of the input
        self._final = False  # the final counts are taken: what the writing thread counts later is ignored

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT stop the writer (see `supervise`); one the server's process ignored stays ignored, as
        Python leaves an ignored SIGINT (a server started in the background of a shell must outlive its Ctrl-C)."""
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) != signal.SIG_IGN:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Runs in the main thread between two bytecodes, maybe inside a locked section there: no lock, no message.
        self._signals.append(signum)
        if self._stop_at is None:
            self._stop_at = time.monotonic()

    def supervise(self, writing: threading.Thread) -> int:
        """The main thread: waits until the writing thread is done (the input ended and all of it is written) or,
        once stopping, until WRITER_DEADLINE_S have passed or a second signal came; then counts what is unwritten
        as lost, records the final coverage (not after a second signal) and reports the final counts. The exit
        status: 0, or 1 after a second signal."""
        seen = 0
        while writing.is_alive():
            if len(self._signals) > seen:
                if not seen:
                    self._stopping(self._signals[0])
                seen = len(self._signals)
                with self._ready:
                    self._ready.notify_all()  # a writing thread waiting to retry the store stops waiting
            if seen >= 2:
                break
            if self._stop_at is not None and time.monotonic() >= self._stop_at + WRITER_DEADLINE_S:
                break
            writing.join(0.05)
        forced = len(self._signals) >= 2
        self._finish(forced)
        return 1 if forced else 0

    def _stopping(self, signum: int) -> None:
        with self._ready:
            held = len(self._jobs) + self._in_flight
        self._send(
            {
                "stopping": signal.Signals(signum).name,
                "log": f"newscat tracing: the trace writer got {signal.Signals(signum).name}: it writes the {held} "
                f"requests it holds, and those still on their way, within {WRITER_DEADLINE_S:g} s; new requests go "
                "untraced",
            }
        )

    def _finish(self, forced: bool) -> None:
        """The final accounting: what is still held or being written counts as lost, the counts freeze, the final
        coverage record is made (within FINAL_RECORD_S; skipped when `forced`), and the server gets the counts."""
        with self._ready:
            unwritten = len(self._jobs) + self._in_flight
            if unwritten:
                self.counts[SHUTDOWN_LOST] += unwritten
            self._jobs.clear()
            self._in_flight = 0
            self._final = True
            self._ready.notify_all()
            counts, error = dict(self.counts), self.error
        coverage = "coverage not recorded (a second signal)" if forced else self._final_coverage()
        why = signal.Signals(self._signals[0]).name if self._signals else "end of its input"
        lost = sum(n for what, n in counts.items() if what.startswith("lost"))
        line = (
            f"newscat tracing: the trace writer ends ({why}): {counts.get('traced', 0)} traced, {lost} lost "
            f"({counts.get(SHUTDOWN_LOST, 0)} at shutdown); {coverage}"
        )
        self._send({"counts": counts, "error": error, "final": True, "log": line})

    def _final_coverage(self) -> str:
        """The final coverage record, given FINAL_RECORD_S (a store that hangs must not hold the exit)."""
        outcome: list[bool | None] = []

        def record() -> None:
            try:
                outcome.append(self._record_coverage(final=True))
            except Exception as exc:  # CoverageLog catches the store's errors: this is anything else
                self.error = f"{type(exc).__name__}: {exc}"
                outcome.append(False)

        thread = threading.Thread(target=record, name="newscat-writer-coverage", daemon=True)
        thread.start()
        thread.join(FINAL_RECORD_S)
        if not outcome:
            return f"final coverage not recorded: the store did not answer within {FINAL_RECORD_S:g} s"
        if outcome[0] is None:
            return "no coverage to record (no store reached, or no served model)"
        if not outcome[0]:
            return f"final coverage not recorded: {self._coverage.error if self._coverage else self.error}"
        return "final coverage recorded"

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self._tell_server(message)

    def read(self, stream: IO[bytes]) -> None:
        """Takes requests off the pipe as they come, so the server's feeder rarely waits on it. After a stop signal
        too: what still comes was answered before the server heard of the stop (it queues nothing after), and the
        deadline bounds the time spent on it."""
        while (jobs := receive(stream)) is not None:
            with self._ready:
                if self._final:  # reported already: the server counts what it handed over since
                    continue
                if isinstance(jobs, dict):  # the tracer's own counts, for the coverage record
                    self._request_counts = jobs
                    continue
                room = max(0, self.config.settings.backlog - len(self._jobs))
                self._jobs.extend(jobs[:room])
                if len(jobs) > room:
                    self.counts[BACKLOG_LOST] += len(jobs) - room
                self._ready.notify_all()
        with self._ready:
            self._closed = True
            if self._stop_at is None:  # the server closed its side: it waits for the writer, so the deadline runs
                self._stop_at = time.monotonic()
            self._ready.notify_all()

    def run(self) -> None:
        """The writing thread: reach the store (retrying), then write batches until the input ends and the backlog
        is empty, or the final accounting took over."""
        while not self.setup():
            self._send({"log": self._unreachable()})
            with self._ready:
                if self._ready.wait_for(lambda: self._closed or self._stop_at is not None, RETRY_SETUP_S):
                    break
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._jobs or self._closed or self._final, REPORT_EVERY_S)
                if self._final:
                    return
                batch = [self._jobs.popleft() for _ in range(min(BATCH, len(self._jobs)))]
                self._in_flight += len(batch)
                done = self._closed and not self._jobs
            if batch:
                self.write(batch)
            self._report()
            self._record_coverage(final=False)
            if done:
                return

    def setup(self) -> bool:
        """Find or create the experiment and resolve the served model; False while the store is unreachable."""
        settings = self.config.settings
        client = mlflow.MlflowClient(self.config.tracking_uri)
        try:
            self._client = TracingClient(self.config.tracking_uri)
            served = served_model(client, settings.model_uri, self.config.model_id)
            model_id = served.pop(MODEL_ID_METADATA, None)
            experiment_id = trace_experiment(client, settings.experiment, model_id)
            experiment = client.get_experiment(experiment_id).name
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self._tags = {**self._tags, **served}
        # An operator's active model wins over the served one, as in MLflow's own tracing.
        self._model_id = os.environ.get("MLFLOW_ACTIVE_MODEL_ID") or model_id
        self._experiment_id = experiment_id
        model = f", model {model_id}" if model_id else ""
        if REGISTERED_MODEL_TAG in served:
            model += f" ({served[REGISTERED_MODEL_TAG]} version {served[REGISTERED_VERSION_TAG]})"
        line = (
            f"newscat tracing on: experiment {experiment!r} (id {experiment_id}){model}, sampling "
            f"{settings.sampling:g}, texts {'kept' if settings.texts else 'not kept (SHA-256 only)'}, written by "
            f"process {os.getpid()} at nice {WRITER_NICE}, backlog {settings.backlog} requests, "
            f"{self._calls} write{'s' if self._calls > 1 else ''} in flight"
        )
        self._send({"log": line, "ready": experiment_id})
        return True

    def _unreachable(self) -> str:
        return (
            f"newscat tracing: the tracking store did not answer ({self.error}); requests wait in the backlog "
            f"({self.config.settings.backlog} at most), retrying in {RETRY_SETUP_S:.0f} s"
        )

    def write(self, batch: list[tuple]) -> None:
        """Each trace's info, then the spans of those written in one call (or as trace artifacts, where the store
        refuses that call); what fails is counted lost, with its error."""
        built = []
        for job in batch:
            try:
                built.append(self.trace(*job))
            except Exception as exc:
                self._lost(f"lost: the trace could not be built ({type(exc).__name__})", exc)
        if not built:
            return
        if self._experiment_id is None:  # the input ended before the store was ever reached
            self._lost(STORE_LOST, None, len(built))
            return
        if not self._spans_in_store():
            self._write_with_artifacts(built)
            return
        started, since = [], time.monotonic()
        # The infos first (a trace created by its spans would be re-read and merged), several in flight at once:
        # MLflow has no call that writes many, and one at a time a store's round trips leave it mostly waiting.
        calls = [self._pool.submit(self._client.start_trace, info) for _, info in built]
        for (span, info), call in zip(built, calls, strict=True):
            try:
                call.result()
            except Exception as exc:
                self._lost(STORE_LOST, exc)
                continue
            started.append((span, info))
            # A slow store takes seconds a call: spans follow their infos within SPANS_WITHIN_S, not a batch later.
            if time.monotonic() - since >= SPANS_WITHIN_S:
                self._write_spans(started)
                started, since = [], time.monotonic()
        self._write_spans(started)

    def _write_spans(self, started: list[tuple[Span, TraceInfo]]) -> None:
        """The spans of traces whose infos are written, in one call; a failure removes those traces again (and a
        refusal writes them anew with their spans as artifacts)."""
        if not started:
            return
        spans = [span for span, _ in started]
        try:
            self._client.log_spans(self._experiment_id, spans)
        except Exception as exc:
            refused = _refuses_log_spans(exc)
            if not refused:
                self._lost(STORE_LOST, exc, len(spans))
            with contextlib.suppress(Exception):  # no trace without its span left behind, where the store allows
                self._client.delete_traces(self._experiment_id, trace_ids=[span.trace_id for span in spans])
            if refused:
                self._refused(exc)
                self._write_with_artifacts(started)
            return
        self._count_traced(len(spans))

    def _spans_in_store(self) -> bool:
        """Whether spans go to the store (`log_spans`); after a refusal, again once REPROBE_S has passed."""
        if self._artifacts_since is None:
            return True
        if time.monotonic() - self._artifacts_since < REPROBE_S:
            return False
        # MLflow caches its server-version probe (a timed-out probe too): a new offer must probe afresh. Should MLflow
        # drop that cache, the offer goes on without (tests/unit/serving/test_mlflow_internals.py says so first).
        with contextlib.suppress(AttributeError):
            forget_server_version()
        self._artifacts_since = None
        return True

    def _refused(self, exc: BaseException) -> None:
        self._artifacts_since = time.monotonic()
        self._send(
            {
                "log": f"newscat tracing: the tracking store refused span logging ({type(exc).__name__}: {exc}); "
                f"spans are written as trace artifacts, span logging is offered again in {REPROBE_S:.0f} s"
            }
        )

    def _write_with_artifacts(self, built: list[tuple[Span, TraceInfo]]) -> None:
        """Each trace's info, then its spans as the trace's artifact (MLflow's own fallback)."""
        for span, info in built:
            info.tags[TraceTagKey.SPANS_LOCATION] = SpansLocation.ARTIFACT_REPO.value
            try:
                stored = self._client.start_trace(info)
            except Exception as exc:
                self._lost(STORE_LOST, exc)
                continue
            try:
                upload_trace_data(self._client, stored, TraceData(spans=[span]))
            except Exception as exc:
                self._lost(STORE_LOST, exc)
                with contextlib.suppress(Exception):
                    self._client.delete_traces(self._experiment_id, trace_ids=[info.trace_id])
                continue
            self._count_traced(1)

    def _record_coverage(self, final: bool) -> bool | None:
        """The coverage totals to the store (`newscat.serving.coverage`): every `coverage_every_s` when they
        changed, and at the end (`final`: the run ends too); a failed write is said in the log, and the next one
        carries the same totals. Whether the totals were written (None: nothing to record, or not due)."""
        with self._coverage_lock:
            model_id = self._model_id or self._traced_model_id
            if self._experiment_id is None or not model_id:  # the store never answered, or no model to record for
                return None
            if not final and (self._final or time.monotonic() - self._coverage_at < self.config.coverage_every_s):
                return None
            self._coverage_at = time.monotonic()
            if self._coverage is None:
                served = {k: v for k, v in self._tags.items() if k in (REGISTERED_MODEL_TAG, REGISTERED_VERSION_TAG)}
                self._coverage = CoverageLog(self.config.tracking_uri, self._experiment_id, model_id, served)
            with self._ready:
                totals = coverage_of(self._request_counts, self.counts)
            written = self._coverage.log(totals)
            if not written and not final:
                self._send(
                    {
                        "log": f"newscat tracing: the coverage record could not be written ({self._coverage.error}); "
                        "the next one carries the same totals"
                    }
                )
            if final:
                self._coverage.close()
            return written

    def _count_traced(self, n: int) -> None:
        self._settle("traced", n)

    def _settle(self, what: str, n: int) -> None:
        """The fate of `n` requests being written; after the final accounting (which counted them lost), nothing."""
        with self._ready:
            if self._final:
                return
            self.counts[what] += n
            self._in_flight -= n

    def trace(
        self,
        trace_id: str,
        start_ns: int,
        end_ns: int,
        texts: list[str],
        probabilities: Any,
        truncated: Any,
        context_model_id: str | None,
    ) -> tuple[Span, TraceInfo]:
        """One request as MLflow stores a trace: its root span (the per-text records as outputs) and its info."""
        tokens, unknown = self._encoder.counts(texts, max_chars=self._max_chars)
        records = text_records(
            texts,
            probabilities,
            truncated,
            tokens,
            self.config.label_names,
            unknown=unknown,
            keep_texts=self.config.settings.texts,
        )
        inputs, outputs = {"rows": len(texts)}, {"predictions": records}
        attributes = {
            SpanAttributeKey.REQUEST_ID: trace_id,
            SpanAttributeKey.SPAN_TYPE: SPAN_TYPE,
            SpanAttributeKey.INPUTS: inputs,
            SpanAttributeKey.OUTPUTS: outputs,
            **self.config.attributes,
        }
        span = Span.from_dict(
            {
                "trace_id": _base64(bytes.fromhex(trace_id.removeprefix("tr-"))),
                "span_id": _base64(os.urandom(8)),
                "parent_span_id": None,
                "name": SPAN_NAME,
                "start_time_unix_nano": start_ns,
                "end_time_unix_nano": end_ns,
                "events": [],
                "status": {"code": "STATUS_CODE_OK", "message": ""},
                "attributes": {key: json.dumps(value) for key, value in attributes.items()},
            }
        )
        model_id = context_model_id or self._model_id
        self._traced_model_id = model_id or self._traced_model_id
        info = TraceInfo(
            trace_id=trace_id,
            trace_location=TraceLocation.from_experiment_id(self._experiment_id or ""),
            request_time=start_ns // 1_000_000,
            state=TraceState.OK,
            request_preview=json.dumps(inputs)[:PREVIEW_CHARS],
            response_preview=json.dumps(outputs)[:PREVIEW_CHARS],
            execution_duration=(end_ns - start_ns) // 1_000_000,
            trace_metadata={TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION)}
            | ({MODEL_ID_METADATA: model_id} if model_id else {}),
            tags={
                **self._tags,
                ROWS_TAG: str(len(texts)),
                TraceTagKey.TRACE_NAME: SPAN_NAME,
                TraceTagKey.SPANS_LOCATION: SpansLocation.TRACKING_STORE.value,  # get_trace reads spans from the store
            },
        )
        return span, info

    def _lost(self, what: str, exc: BaseException | None, n: int = 1) -> None:
        with self._ready:  # the reader thread counts too
            if exc is not None and not self._final:
                self.error = f"{type(exc).__name__}: {exc}"
        self._settle(what, n)

    def _report(self) -> None:
        """The counts back to the server, when they changed."""
        with self._ready:
            now = (dict(self.counts), self.error)
        if now != self._reported:
            self._send({"counts": now[0], "error": now[1]})
            self._reported = now


def store_calls(tracking_uri: str, concurrency: int) -> int:
    """`start_trace` calls in flight at once: `concurrency` to a tracking server, whose round trips leave it waiting
    one call at a time; 1 to a store this process writes itself (a database or a folder): sqlite serialises writes,
    so concurrent ones only wait for its lock, and other databases were not measured."""
    head = tracking_uri.split(":", 1)[0].split("+", 1)[0].lower()
    if ":" not in tracking_uri:  # a folder, or Databricks by name
        local = head not in ("databricks", "databricks-uc", "uc")
    else:  # a one-letter scheme is a Windows drive
        local = head in ("file", "sqlite", "postgresql", "mysql", "mssql") or len(head) == 1
    return 1 if local else concurrency


def trace_experiment(client: mlflow.MlflowClient, name: str | None, model_id: str | None) -> str:
    """The id of the experiment traces go to: the one named, else the served LoggedModel's, else the default."""
    if name is None and model_id:
        return client.get_logged_model(model_id).experiment_id
    return experiment_by_name(client, name or DEFAULT_EXPERIMENT)


def experiment_by_name(client: mlflow.MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another server process created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def served_model(client: mlflow.MlflowClient, model_uri: str | None, own_model_id: str | None = None) -> dict[str, str]:
    """The LoggedModel served (as the trace metadata MLflow links traces to models by) and its registered name and
    version (as trace tags).

    The id the served files record (`own_model_id`) is the model that answers: it wins over `model_uri`
    (NEWSCAT_TRACE_MODEL_URI, needed only by models logged before newscat recorded the id), whose alias may have
    moved to another version since the server loaded its files.
    """
    served: dict[str, str] = {}
    uri_model_id, name = None, ""
    if model_uri:
        name, version, alias = registered_model(model_uri)
        if not name:  # models:/m-<id>
            uri_model_id = model_uri[len("models:/") :].strip("/")
        else:
            found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
            # A version registered from models:/m-... may read model_id None on some stores; its source holds the id.
            uri_model_id = found.model_id or (
                found.source[len("models:/") :] if found.source.startswith("models:/m-") else None
            )
            served = {REGISTERED_MODEL_TAG: name, REGISTERED_VERSION_TAG: str(found.version)}
    if own_model_id and own_model_id != uri_model_id:
        if not _in_store(client, own_model_id):
            # The files were copied and served against another store: trace them, linked to no model, rather than
            # lose every request waiting for a model this store will never hold.
            print(
                f"newscat tracing: this store holds no LoggedModel {own_model_id}: traces are not linked to a model",
                file=sys.stderr,
                flush=True,
            )
            own_model_id = None
        else:
            served = registered_versions_of(client, own_model_id, prefer=name)
    model_id = own_model_id or uri_model_id
    return {**served, MODEL_ID_METADATA: model_id} if model_id else served


def _in_store(client: mlflow.MlflowClient, model_id: str) -> bool:
    """Whether the store holds the LoggedModel `model_id` (any other failure is the store's, raised)."""
    try:
        client.get_logged_model(model_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def registered_versions_of(client: mlflow.MlflowClient, model_id: str, prefer: str = "") -> dict[str, str]:
    """The registered name and version of a LoggedModel (as trace tags): of the name `prefer` where it has one
    there, else its latest registration; {} when it is not registered."""
    linked = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]") or "[]")
    entries = [(str(e["name"]), str(e["version"])) for e in linked if e.get("name") and e.get("version")]
    if not entries:  # registered by create_model_version, which does not tag the LoggedModel
        found = client.search_model_versions(f"source_path = 'models:/{model_id}'")
        entries = [(v.name, str(v.version)) for v in sorted(found, key=lambda v: int(v.creation_timestamp or 0))]
    preferred = [entry for entry in entries if entry[0] == prefer] or entries
    if not preferred:
        return {}
    name, version = preferred[-1]
    return {REGISTERED_MODEL_TAG: name, REGISTERED_VERSION_TAG: version}


def _refuses_log_spans(exc: BaseException) -> bool:
    """Whether `log_spans` failed because the store does not take spans (MLflow's exporter tells it so)."""
    if isinstance(exc, NotImplementedError):  # no server version (probe timed out), or a server older than 3.4
        return True
    return isinstance(exc, RestException) and "REST OTLP span logging is not supported" in exc.message


def _tell(messages: IO[str], message: dict[str, Any]) -> None:
    """One message to the server; once it has gone (shut down), the writer goes on writing what it holds."""
    with contextlib.suppress(OSError, ValueError):
        messages.write(json.dumps(message) + "\n")


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _lower_priority() -> None:
    """Nice WRITER_NICE: the server's forward passes get most of a busy CPU, and the writer still gets its share.
    Not Linux's idle class: under another job that keeps every core busy (a training run beside the server) the idle
    class got the writer so little CPU that it was still importing after 98 s and every request was lost."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, 0, WRITER_NICE)


if __name__ == "__main__":
    main()
