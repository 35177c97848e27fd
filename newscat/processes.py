"""Which process holds a trial or a run: host, pid and start time, and whether that process is gone.

Optuna trials (`newscat.training.recovery`) and MLflow runs (`newscat.tracking.interrupted`) record it, so that a
later worker can tell a live process from a dead one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Worker:
    """A process on a host; the start time tells a reused pid from the original process."""

    host: str
    pid: int
    started: float

    @classmethod
    def current(cls) -> Worker:
        process = psutil.Process()
        return cls(socket.gethostname(), process.pid, process.create_time())

    @classmethod
    def parse(cls, tag: str) -> Worker | None:
        """From `host:pid:started`; None for anything else."""
        host, _, rest = tag.rpartition(":")
        host, _, pid = host.rpartition(":")
        try:
            return cls(host, int(pid), float(rest)) if host else None
        except ValueError:
            return None

    def tag(self) -> str:
        return f"{self.host}:{self.pid}:{self.started:.2f}"

    def is_gone(self) -> bool:
        """True when this worker ran on this host and its process no longer exists (or is a zombie)."""
        if self.host != socket.gethostname():
            return False  # another machine: the heartbeat decides
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.started) > 1.0 or process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True


def describe(worker_tag: str) -> str:
    worker = Worker.parse(worker_tag)
    return f"process {worker.pid} on {worker.host}" if worker else "its worker"
