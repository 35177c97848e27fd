"""Pacing the server to its trace writer: the limit follows the writer's measured rate, and nothing waits while
pacing is off, before the writer wrote anything, or once it stopped making progress."""

from __future__ import annotations

from newscat.serving.pacing import HOLD_S, MIN_HELD, PROGRESS_S, Pacing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_never_holds() -> None:
    clock = Clock()
    pacing = Pacing(0.0, 10_000, clock)
    pacing.written(50)
    assert not pacing.holds(1_000_000)


def test_nothing_waits_before_the_writer_wrote_anything() -> None:
    clock = Clock()
    pacing = Pacing(1.0, 10_000, clock)
    assert not pacing.holds(1_000_000)
    pacing.written(0)  # a report that settled nothing yet
    assert not pacing.holds(1_000_000)


def test_the_limit_is_the_writers_last_seconds_of_work_at_least_one_batch_at_most_the_backlog() -> None:
    clock = Clock()
    pacing = Pacing(1.0, 10_000, clock)
    pacing.written(10)
    assert pacing.limit() == MIN_HELD  # one report: no rate yet
    assert pacing.holds(MIN_HELD) and not pacing.holds(MIN_HELD - 1)
    for _ in range(5):  # 100 settled per second
        clock.now += 1
        pacing.written(pacing._samples[-1][1] + 100)
    assert pacing.rate() == 100
    assert pacing.limit() == int(100 * HOLD_S)
    assert Pacing(1.0, 50, clock).limit() == 50  # never more than the backlog holds
    small = Pacing(1.0, 50, clock)
    small.written(1)
    assert small.holds(50) and not small.holds(49)


def test_a_writer_that_stopped_making_progress_slows_nothing() -> None:
    clock = Clock()
    pacing = Pacing(1.0, 10_000, clock)
    pacing.written(10)
    assert pacing.holds(1_000)
    clock.now += PROGRESS_S + 0.1
    pacing.written(10)  # reports, but settles nothing: the store stopped answering
    assert not pacing.holds(1_000)
    pacing.written(11)
    assert pacing.holds(1_000)


def test_waits_are_counted() -> None:
    pacing = Pacing(1.0, 10, Clock())
    pacing.count(0.25)
    pacing.count(0.75)
    assert (pacing.waited, pacing.waited_s) == (2, 1.0)
