"""The monitor's verdict: healthy, unhealthy, or not judged, each with its own exit status (and one for errors).

A verdict rests on parts, each judged only on enough evidence:
- **drift** (required): judged on at least `monitor.min_texts` live texts;
- **live accuracy** (optional: true labels may come late or never): judged on at least `monitor.min_labelled`;
- **coverage** (required where the trace writers recorded it): the share of the requests meant to be traced that
  were, at least `monitor.min_coverage`; below it the window is not the traffic, so it can prove harm, never health.

UNHEALTHY when any judged part fails (evidence of harm stands on partial traffic); else NOT_JUDGED when a required
part could not be judged; else HEALTHY. Zero traffic is never healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# Exit statuses of `newscat monitor`. 2 is left to click, which exits 2 on a usage error (a bad option).
EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_NOT_JUDGED = 3
EXIT_ERROR = 4  # no verdict: the store failed, no reference, Evidently missing, a bad config, interrupted


class Verdict(Enum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    NOT_JUDGED = "not judged"

    @property
    def exit_code(self) -> int:
        return {Verdict.HEALTHY: EXIT_HEALTHY, Verdict.UNHEALTHY: EXIT_UNHEALTHY}.get(self, EXIT_NOT_JUDGED)


@dataclass(frozen=True)
class Part:
    """One part of the verdict: whether it was judged (and if not, why), and what it found wrong."""

    name: str
    required: bool  # HEALTHY needs it judged
    judged: bool
    problems: tuple[str, ...] = ()  # what makes the model unhealthy (judged parts only)
    why: str = ""  # why it was not judged

    @property
    def state(self) -> str:
        if not self.judged:
            return "not judged"
        return "FAILED" if self.problems else "passed"


def verdict(parts: tuple[Part, ...]) -> Verdict:
    """UNHEALTHY when a judged part failed; NOT_JUDGED when a required part was not judged; else HEALTHY."""
    if any(p.judged and p.problems for p in parts):
        return Verdict.UNHEALTHY
    if any(p.required and not p.judged for p in parts) or not any(p.judged for p in parts):
        return Verdict.NOT_JUDGED
    return Verdict.HEALTHY


def verdict_line(parts: tuple[Part, ...]) -> str:
    """The summary's last word: the verdict, what it rests on and the exit status it gives."""
    outcome = verdict(parts)
    judged = ", ".join(p.name for p in parts if p.judged) or "nothing"
    if outcome is Verdict.UNHEALTHY:
        failed = ", ".join(p.name for p in parts if p.judged and p.problems)
        return f"UNHEALTHY ({failed} failed; exit {outcome.exit_code})"
    if outcome is Verdict.NOT_JUDGED:
        missing = "; ".join(f"{p.name}: {p.why}" for p in parts if p.required and not p.judged)
        return (
            f"NOT JUDGED: too little evidence for a verdict ({missing or 'nothing judged'}); exit {outcome.exit_code}"
        )
    unjudged = [p.name for p in parts if not p.judged]
    also = f"; not judged: {', '.join(unjudged)}" if unjudged else ""
    return f"HEALTHY (judged: {judged}{also}; exit {outcome.exit_code})"
