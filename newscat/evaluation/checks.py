"""Behavioural checks on built-in cases (CheckList style): minimum functionality, invariance, direction.

- Minimum functionality (MFT): unambiguous headlines must get their topic.
- Invariance (INV): swapping person or place names must not change the topic.
- Directional (DIR): adding a sentence about a topic must not lower that topic's probability.

The cases speak AG News' topics (World, Sports, Business, Sci/Tech); a model with other classes skips the cases
whose topics it lacks, and the report counts them as skipped and says why. A model with none of those topics (two
sentiment classes, 20 newsgroups) runs no case at all: news headlines about AG News' topics say nothing about it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

AG_NEWS_TOPICS = ("World", "Sports", "Business", "Sci/Tech")

MFT_CASES: tuple[tuple[str, str], ...] = (
    ("Manchester United beat Chelsea 3-1 to go top of the Premier League", "Sports"),
    ("Serena Williams wins her third Wimbledon title in straight sets", "Sports"),
    ("The Yankees clinch the pennant with a walk-off home run in the ninth", "Sports"),
    ("Olympic sprinter breaks the 100 metres world record in Athens", "Sports"),
    ("Shares of Ford fall 4 percent after the carmaker cuts its profit forecast", "Business"),
    ("The Federal Reserve raises interest rates by a quarter point", "Business"),
    ("Oil prices climb to a record as crude inventories shrink", "Business"),
    ("Retail sales rose more than expected in October, the Commerce Department said", "Business"),
    ("Microsoft releases a security patch for a flaw in Windows XP", "Sci/Tech"),
    ("NASA's rover finds new evidence of water on Mars", "Sci/Tech"),
    ("Researchers build a faster chip using carbon nanotubes", "Sci/Tech"),
    ("Google unveils a new search tool for desktop computers", "Sci/Tech"),
    ("Rebels attack a convoy near Baghdad, killing three soldiers", "World"),
    ("The prime minister calls early elections after the coalition collapses", "World"),
    ("Peace talks between Israel and the Palestinians resume in Cairo", "World"),
    ("Earthquake kills hundreds in northern Iran, officials say", "World"),
)

INV_TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("{} wins the men's final at the Australian Open", ("Roger Federer", "Andy Roddick", "Lleyton Hewitt")),
    ("Police in {} arrest two suspects after a bombing at a market", ("Madrid", "Jakarta", "Istanbul")),
    ("{} chief executive resigns amid an accounting inquiry", ("Boeing", "Siemens", "Nestle")),
    ("{} launches a music download service to rival Apple's iTunes", ("Sony", "Napster", "Virgin")),
    ("Floods in {} leave thousands homeless", ("Bangladesh", "Haiti", "southern China")),
    ("{} scores twice as his club reaches the Champions League final", ("Thierry Henry", "Andriy Shevchenko")),
)

DIR_CASES: tuple[tuple[str, str, str], ...] = (
    ("The company announced the plan on Tuesday.", " Its shares rose 6 percent in New York.", "Business"),
    ("The team met reporters after the trip.", " They won the championship game 24-10 on Sunday.", "Sports"),
    ("Officials gave details on Monday.", " The software update fixes a bug in the operating system.", "Sci/Tech"),
    ("The statement was read out on Friday.", " UN troops were sent to the border after the clashes.", "World"),
)


def _cases_digest() -> str:
    """A short digest of every built-in case, so that results on different case sets are never compared."""
    cases = json.dumps([MFT_CASES, INV_TEMPLATES, DIR_CASES], sort_keys=True).encode()
    return hashlib.sha256(cases).hexdigest()[:8]


# The built-in cases as the "dataset" the check metrics are linked to.
CASES_RECORD = {
    "split": "behavioural-checks",
    "digest": _cases_digest(),
    "source": "newscat.evaluation.checks",
    "rows": len(MFT_CASES) + sum(len(f) for _, f in INV_TEMPLATES) + len(DIR_CASES),
}


@dataclass
class CheckReport:
    """Counts and failures per kind of check."""

    results: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> passed / failed / skipped
    failures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why cases were skipped

    def count(self, kind: str, outcome: str) -> None:
        self.results.setdefault(kind, {"passed": 0, "failed": 0, "skipped": 0})[outcome] += 1

    @property
    def failed(self) -> int:
        return sum(r["failed"] for r in self.results.values())

    def metrics(self) -> dict[str, float]:
        """Per kind: pass rate over the cases run (none when no case ran: 1.0 would claim a pass), and the failure
        count."""
        out = {}
        for kind, r in self.results.items():
            ran = r["passed"] + r["failed"]
            if ran:
                out[f"checks_{kind}_pass_rate"] = r["passed"] / ran
            out[f"checks_{kind}_failed"] = float(r["failed"])
        return out

    def text(self) -> str:
        """A printable report: why cases were skipped, a line per kind, then every failure."""
        lines = [f"note: {note}" for note in self.notes]
        lines.append(f"{'check':<6}{'passed':>8}{'failed':>8}{'skipped':>9}")
        for kind, r in self.results.items():
            lines.append(f"{kind:<6}{r['passed']:>8}{r['failed']:>8}{r['skipped']:>9}")
        lines.append(f"{self.failed} failure(s)" + (":" if self.failures else ""))
        lines += [f"- [{f['kind']}] {f['detail']}" for f in self.failures]
        return "\n".join(lines)


def run_checks(model: Any) -> CheckReport:
    """Run every built-in case through `model` (a loaded pyfunc) in one batch and judge the answers."""
    texts = [text for text, _ in MFT_CASES]
    texts += [template.format(fill) for template, fills in INV_TEMPLATES for fill in fills]
    texts += [text for base, extra, _ in DIR_CASES for text in (base, base + extra)]
    output = model.predict(pd.DataFrame({"text": texts}))
    answers = dict(zip(texts, zip(output["label"], output["probabilities"], strict=True), strict=True))
    classes = set(output["probabilities"].iloc[0])
    report = CheckReport(notes=_notes(classes))
    _minimum_functionality(answers, classes, report)
    _invariance(answers, classes, report)
    _directional(answers, classes, report)
    return report


def _notes(classes: set[str]) -> list[str]:
    """Why cases are skipped for a model whose classes are not AG News' topics."""
    missing = [t for t in AG_NEWS_TOPICS if t not in classes]
    if not missing:
        return []
    if len(missing) == len(AG_NEWS_TOPICS):
        shown = ", ".join(sorted(classes)[:8]) + (", ..." if len(classes) > 8 else "")
        return [
            f"the model's {len(classes)} classes ({shown}) include none of AG News' topics "
            f"({', '.join(AG_NEWS_TOPICS)}): the built-in cases are news about those topics, so none was run"
        ]
    return [f"the model lacks AG News topic(s) {', '.join(missing)}: the cases expecting them were skipped"]


def _minimum_functionality(answers: dict, classes: set[str], report: CheckReport) -> None:
    for text, expected in MFT_CASES:
        if expected not in classes:
            report.count("MFT", "skipped")
            continue
        label, probabilities = answers[text]
        ok = label == expected
        report.count("MFT", "passed" if ok else "failed")
        if not ok:
            report.failures.append(
                {"kind": "MFT", "detail": f"{text!r}: expected {expected}, got {label} ({probabilities[label]:.2f})"}
            )


def _invariance(answers: dict, classes: set[str], report: CheckReport) -> None:
    for template, fills in INV_TEMPLATES:
        if classes.isdisjoint(AG_NEWS_TOPICS):
            report.count("INV", "skipped")
            continue
        labels = {fill: answers[template.format(fill)][0] for fill in fills}
        ok = len(set(labels.values())) == 1
        report.count("INV", "passed" if ok else "failed")
        if not ok:
            shown = ", ".join(f"{fill} -> {label}" for fill, label in labels.items())
            report.failures.append({"kind": "INV", "detail": f"{template!r}: {shown}"})


def _directional(answers: dict, classes: set[str], report: CheckReport) -> None:
    for base, extra, topic in DIR_CASES:
        if topic not in classes:
            report.count("DIR", "skipped")
            continue
        before, after = answers[base][1][topic], answers[base + extra][1][topic]
        ok = after >= before
        report.count("DIR", "passed" if ok else "failed")
        if not ok:
            report.failures.append(
                {"kind": "DIR", "detail": f"adding {extra.strip()!r}: P({topic}) fell {before:.2f} -> {after:.2f}"}
            )
