"""Trace coverage: how many requests the server answered, traced, and lost, recorded where `newscat monitor` reads it.

The trace writer logs its process's counts as an MLflow run in the traces' experiment (tag `newscat.role` =
`trace-coverage`, tag `newscat.model_id` = the served LoggedModel): metrics `served`, `not_sampled`, `traced` and
`lost`, each a running total since the server started, logged at most every COVERAGE_EVERY_S when they changed and
once more when the writer ends. Running totals with their timestamps make the record robust: a log call the store
refuses loses nothing (the next one carries the totals), and any window's traffic is the total at its end minus the
total at its start. A run per server process, because every worker of a server has its own tracer.

Shipped inside every logged model: only mlflow and the standard library are imported here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import mlflow
from mlflow.entities import Metric, RunStatus

from newscat.names import ROLE_TAG, Role

COVERAGE_EVERY_S = 15.0  # the totals go to the store at most this often (and at the writer's end)
MODEL_ID_TAG = "newscat.model_id"
NOT_SAMPLED = "not sampled"  # the tracer's count of requests that sampling left untraced
SERVED = "served"  # the tracer's count of every request answered while tracing was on
METRICS = ("served", "not_sampled", "traced", "lost")


@dataclass(frozen=True)
class Coverage:
    """Requests of one window (or running totals): answered, left out by sampling, traced, and lost (any reason)."""

    served: int = 0
    not_sampled: int = 0
    traced: int = 0
    lost: int = 0

    @property
    def pending(self) -> int:
        """Requests to be traced whose fate was not yet counted (still queued or being written)."""
        return max(0, self.served - self.not_sampled - self.traced - self.lost)

    @property
    def share(self) -> float | None:
        """Traced / (traced + lost): the share of the requests meant to be traced that were (None: none decided)."""
        decided = self.traced + self.lost
        return self.traced / decided if decided else None

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(*(getattr(self, k) + getattr(other, k) for k in METRICS))

    def __sub__(self, other: Coverage) -> Coverage:
        return Coverage(*(getattr(self, k) - getattr(other, k) for k in METRICS))

    def metrics(self) -> dict[str, float]:
        return {key: float(getattr(self, key)) for key in METRICS}

    @classmethod
    def from_metrics(cls, values: Mapping[str, float]) -> Coverage:
        return cls(*(int(values.get(key, 0)) for key in METRICS))


def coverage_of(tracer: Mapping[str, int], writer: Mapping[str, int]) -> Coverage:
    """The running totals from the tracer's counts (`served`, `not sampled`, lost on the request path) and the
    writer's (`traced`, lost while writing)."""
    lost = sum(n for what, n in [*tracer.items(), *writer.items()] if what.startswith("lost"))
    return Coverage(int(tracer.get(SERVED, 0)), int(tracer.get(NOT_SAMPLED, 0)), int(writer.get("traced", 0)), lost)


class CoverageLog:
    """The writer's coverage run: created at the first log, its metrics the running totals, ended by `close`."""

    def __init__(self, tracking_uri: str, experiment_id: str, model_id: str, tags: Mapping[str, str]) -> None:
        self._client = mlflow.MlflowClient(tracking_uri)
        self.experiment_id, self.model_id = experiment_id, model_id
        self._tags = dict(tags)
        self.run_id: str | None = None
        self.logged: Coverage | None = None  # the totals the store holds
        self._step = 0
        self.error = ""

    def log(self, totals: Coverage, timestamp_ms: int | None = None) -> bool:
        """The totals as metrics at `timestamp_ms` (now); False (and `error` set) where the store failed."""
        if totals == self.logged:
            return True
        timestamp_ms = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        try:
            if self.run_id is None:
                tags = {**self._tags, ROLE_TAG: Role.TRACE_COVERAGE, MODEL_ID_TAG: self.model_id}
                name = f"trace coverage {self.model_id} {socket.gethostname()}:{os.getppid()}"
                run = self._client.create_run(self.experiment_id, tags=tags, run_name=name)
                self.run_id = run.info.run_id
            values = totals.metrics()
            self._client.log_batch(
                self.run_id, metrics=[Metric(k, v, timestamp_ms, self._step) for k, v in values.items()]
            )
        except Exception as exc:  # the store is down: the next log carries the same totals
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self._step += 1
        self.logged = totals
        return True

    def close(self) -> None:
        """End the run (FINISHED): the server stopped; nothing is raised."""
        if self.run_id is None:
            return
        try:
            self._client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
