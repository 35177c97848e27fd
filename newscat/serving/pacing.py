"""Pacing the server to its trace writer (NEWSCAT_TRACE_WAIT_MS): a request waits, at most that long, while more
requests are on their way to the store than the writer wrote in its last HOLD_S seconds. A server that answers
faster than its tracking store writes then slows to the store's pace instead of losing traces; and since little is
ever queued, a stop's deadline writes what is. Only while the writer makes progress: a store that stopped answering
never slows an answer (requests go to the backlog, and beyond it untraced, as without pacing).

Shipped inside every logged model: only the standard library is imported here.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

HOLD_S = 2.0  # requests on their way: at most what the writer wrote in this long (the stop deadline is 5 s)
MIN_HELD = 64  # whatever the rate: one of the writer's batches
PROGRESS_S = 5.0  # the writer counts as writing while its total rose within this long
RATE_WINDOW_S = 10.0  # the writer's rate: its writes over about this long


class Pacing:
    """How many requests may be on their way to the store before the next one waits. Not thread-safe: the tracer
    calls it under its lock."""

    def __init__(self, wait_s: float, backlog: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self._backlog = backlog
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()  # (time, the writer's running total of settled requests)
        self._progress_at = -math.inf
        self.waited = 0  # requests that waited
        self.waited_s = 0.0  # their waits, summed

    def written(self, total: int) -> None:
        """The writer's running total of requests it settled (traced or lost), as it reports it."""
        now = self._clock()
        if total > (self._samples[-1][1] if self._samples else 0):
            self._progress_at = now
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()

    def rate(self) -> float:
        """Requests the writer settled per second, over the last RATE_WINDOW_S or so (0 before two reports)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def limit(self) -> int:
        """Requests that may be on their way to the store (queued, in the pipe, in the backlog, being written)."""
        return min(self._backlog, max(MIN_HELD, int(self.rate() * HOLD_S)))

    def holds(self, on_the_way: int) -> bool:
        """Whether a request answered now waits: pacing on, the writer writing, and `on_the_way` at the limit."""
        writing = self._clock() - self._progress_at < PROGRESS_S
        return self.wait_s > 0 and writing and on_the_way >= self.limit()

    def count(self, seconds: float) -> None:
        self.waited += 1
        self.waited_s += seconds
