"""Micro-batching: one thread runs the model and merges the requests that queue up while it is busy."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Batcher:
    """Runs every forward pass on one thread and merges the requests that queue up meanwhile.

    With no load a request goes straight through (no waiting window); under load, requests that arrive
    while the model is busy are scored together in the next pass, so throughput grows with concurrency
    instead of threads fighting over the same cores.
    """

    def __init__(self, run: Callable[[list[str]], Any], max_texts: int = 256) -> None:
        self._run = run
        self._max_texts = max_texts
        self._queue: queue.SimpleQueue[tuple[list[str], Future]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="newscat-batcher", daemon=True).start()

    def submit(self, texts: list[str]) -> Any:
        """`run(texts)`'s result for these texts: an array, or a tuple of arrays, with one row per text."""
        done: Future = Future()
        self._queue.put((texts, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            pending = [self._queue.get()]
            count = len(pending[0][0])
            while count < self._max_texts:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                count += len(pending[-1][0])
            self._serve(pending)

    def _serve(self, pending: list[tuple[list[str], Future]]) -> None:
        try:
            results = self._run([text for texts, _ in pending for text in texts])
        except BaseException as exc:  # hand the error to every waiting request; keep the thread alive
            for _, done in pending:
                done.set_exception(exc)
            return
        start = 0
        for texts, done in pending:
            rows = slice(start, start + len(texts))
            done.set_result(tuple(r[rows] for r in results) if isinstance(results, tuple) else results[rows])
            start += len(texts)
