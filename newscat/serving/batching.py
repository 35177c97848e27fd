"""Micro-batching: one thread runs the model and merges the requests that queue up while it is busy."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

# A request waits at most this long for its forward pass (a stuck engine must not hold a server thread forever).
WAIT_SECONDS = 600.0
# The thread ends after this long without requests and starts again with the next one, so that a model that is no
# longer used (repeated loads in one process, e.g. Spark executors) is not kept alive by an idle thread.
IDLE_SECONDS = 30.0


class Batcher:
    """Runs every forward pass on one thread and merges the requests that queue up meanwhile.

    With no load a request goes straight through (no waiting window); under load, requests that arrive
    while the model is busy are scored together in the next pass, so throughput grows with concurrency
    instead of threads fighting over the same cores. A pass that fails is run again request by request, so
    that one bad request fails alone and the others in the pass are answered.

    The thread holds only a weak reference to `run`'s object: dropping the model ends it.
    """

    def __init__(self, run: Callable[[list[str]], Any], max_texts: int = 256) -> None:
        self._run = weakref.WeakMethod(run) if hasattr(run, "__self__") else lambda: run
        self._max_texts = max_texts
        self._queue: queue.SimpleQueue[tuple[list[str], Future]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, texts: list[str]) -> Any:
        """`run(texts)`'s result for these texts: an array, or a tuple of arrays, with one row per text."""
        done: Future = Future()
        self._queue.put((texts, done))
        self._ensure_thread()
        try:
            return done.result(timeout=WAIT_SECONDS)
        except FutureTimeout:
            raise MlflowException(
                f"no answer within {WAIT_SECONDS:.0f} s: the model's engine is stuck or overloaded",
                error_code=INTERNAL_ERROR,
            ) from None

    @property
    def running(self) -> bool:
        """Whether the batching thread is alive (it ends when idle and restarts on demand)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _ensure_thread(self) -> None:
        with self._lock:
            if not self.running:
                self._thread = threading.Thread(
                    target=_loop, args=(weakref.ref(self),), name="newscat-batcher", daemon=True
                )
                self._thread.start()

    def _next(self) -> list[tuple[list[str], Future]] | None:
        """The requests for the next pass, or None when none came within `IDLE_SECONDS`."""
        try:
            pending = [self._queue.get(timeout=IDLE_SECONDS)]
        except queue.Empty:
            return None
        count = len(pending[0][0])
        while count < self._max_texts:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
            count += len(pending[-1][0])
        return pending

    def _serve(self, pending: list[tuple[list[str], Future]]) -> None:
        run = self._run()
        if run is None:
            for _, done in pending:
                done.set_exception(RuntimeError("the model was unloaded"))
            return
        try:
            results = run([text for texts, _ in pending for text in texts])
        except BaseException as exc:
            if len(pending) == 1:  # keep the thread alive; the error goes to its own request
                pending[0][1].set_exception(exc)
                return
            for request in pending:  # find the request that failed: the others get their answers
                self._serve([request])
            return
        start = 0
        for texts, done in pending:
            rows = slice(start, start + len(texts))
            done.set_result(tuple(r[rows] for r in results) if isinstance(results, tuple) else results[rows])
            start += len(texts)


def _loop(ref: weakref.ref[Batcher]) -> None:
    """The batching thread: serves passes until idle, or until the batcher (and so the model) is gone."""
    while True:
        batcher = ref()
        if batcher is None:
            return
        pending = batcher._next()
        if pending is None:
            with batcher._lock:  # a request queued meanwhile would otherwise wait for a thread that is ending
                if batcher._queue.empty():
                    batcher._thread = None
                    return
            continue
        batcher._serve(pending)
        del batcher, pending
