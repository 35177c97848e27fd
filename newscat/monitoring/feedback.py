"""True labels for served predictions: MLflow expectations on the traces the served model wrote.

Every row is checked before anything is written: the trace exists and is a newscat prediction trace, the row exists
in it, the label is one of the classes the trace recorded, no (trace, row) comes twice, and none already has a true
label (unless replacing). One refused row and nothing is written; the report says why, row by row.
"""

from __future__ import annotations

import csv
import getpass
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import AssessmentSource, AssessmentSourceType, Expectation
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from newscat.errors import NewscatError
from newscat.serving.tracing import CLASSES_TAG, ROWS_TAG, parse_prediction_id

EXPECTATION_PREFIX = "true_label"  # one expectation per answered text: true_label[<row>]


class FeedbackFileError(NewscatError):
    """A feedback file that cannot be read as rows of id and label."""


@dataclass(frozen=True)
class FeedbackRow:
    """One true label as given: `where` says where it came from (a file's line, a list's entry)."""

    where: str
    prediction_id: str
    label: str
    row: int | None = None  # given separately when `prediction_id` is a bare trace id


@dataclass
class Outcome:
    """What became of one row: refused (with why), valid (nothing written: another row was refused), or written."""

    given: FeedbackRow
    trace_id: str = ""
    row: int = -1
    refused: str = ""
    written: str = ""  # "written" or "replaced"
    existing: Any = None  # the expectation already on (trace, row), to replace

    def line(self) -> str:
        status = f"REFUSED: {self.refused}" if self.refused else (self.written or "valid, not written")
        return f"{self.given.where}: {self.given.prediction_id} {self.given.label!r}: {status}"


@dataclass
class FeedbackReport:
    """Per row outcomes; `refused` empty means every row was written."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.refused]

    @property
    def written(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.written]

    def summary(self) -> str:
        total = len(self.outcomes)
        if not self.refused:
            return f"{len(self.written)} true labels written"
        if self.written:
            return f"{len(self.written)} of {total} true labels written before the store failed; send the rest again"
        return f"{len(self.refused)} of {total} rows refused: nothing written"

    def text(self) -> str:
        return "\n".join([*(o.line() for o in self.outcomes), self.summary()])


def expectation_name(row: int) -> str:
    return f"{EXPECTATION_PREFIX}[{row}]"


def read_feedback(path: Path) -> list[FeedbackRow]:
    """Rows of a CSV file (with a header) or of JSON lines: `id` (a prediction id as the server answered, or a
    trace id with `row`), `label`."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise FeedbackFileError(f"{path}: line {number} is not JSON ({exc.msg}); nothing written") from None
    else:
        reader = csv.DictReader(text.splitlines())
        missing = {"id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise FeedbackFileError(
                f"{path}: the header needs columns id and label (and row where id is a bare trace id); "
                f"missing {', '.join(sorted(missing))}; nothing written"
            )
        records = [(f"line {reader.line_num}", dict(record)) for record in reader]
    return [feedback_row(where, record) for where, record in records]


def feedback_row(where: str, record: Any) -> FeedbackRow:
    """A row from a mapping with `id`, `label` and optionally `row`; what is missing shows up in the report."""
    if not isinstance(record, Mapping):
        return FeedbackRow(where, json.dumps(record)[:60], "", None)
    row = record.get("row")
    return FeedbackRow(
        where,
        "" if record.get("id") is None else str(record["id"]),
        "" if record.get("label") is None else str(record["label"]),
        None if row in (None, "") else row,
    )


def attach_feedback(
    rows: Iterable[FeedbackRow | Mapping[str, Any]], *, source: str | None = None, replace: bool = False
) -> FeedbackReport:
    """Check every row against the tracking store, then log each as an expectation (HUMAN source `source`, default
    the OS user) on its trace; a single refused row and nothing is written."""
    given = [r if isinstance(r, FeedbackRow) else feedback_row(f"entry {i}", r) for i, r in enumerate(rows, 1)]
    report = FeedbackReport([Outcome(r) for r in given])
    traces: dict[str, Any] = {}
    seen: dict[tuple[str, int], str] = {}
    for outcome in report.outcomes:
        _check(outcome, traces, seen, replace=replace)
    if report.refused or not report.outcomes:
        return report
    who = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=source or _os_user())
    for outcome in report.outcomes:
        try:
            _write(outcome, who)
        except MlflowException as exc:  # the store failed midway: the report says which rows made it
            outcome.refused = f"not written: {exc.message}"
            break
    return report


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a name
        return "unknown"


def _check(outcome: Outcome, traces: dict[str, Any], seen: dict[tuple[str, int], str], *, replace: bool) -> None:
    """Fill in the outcome's trace and row, or why it is refused."""
    given = outcome.given
    try:
        outcome.trace_id, outcome.row = _trace_and_row(given)
    except ValueError as exc:
        outcome.refused = str(exc)
        return
    if not given.label:
        outcome.refused = "no label"
        return
    key = (outcome.trace_id, outcome.row)
    if key in seen:
        outcome.refused = f"duplicate of {seen[key]} (same prediction)"
        return
    seen[key] = given.where
    if outcome.trace_id not in traces:
        traces[outcome.trace_id] = _trace(outcome.trace_id)
    trace = traces[outcome.trace_id]
    if trace is None:
        outcome.refused = f"unknown id: no trace {outcome.trace_id} in the tracking store"
        return
    tags = trace.info.tags
    if CLASSES_TAG not in tags or ROWS_TAG not in tags:
        outcome.refused = f"trace {outcome.trace_id} is not a newscat prediction"
        return
    if outcome.row >= int(tags[ROWS_TAG]):
        outcome.refused = f"unknown row {outcome.row}: that request held {tags[ROWS_TAG]} text(s)"
        return
    classes = json.loads(tags[CLASSES_TAG])
    if given.label not in classes:
        outcome.refused = f"unknown label {given.label!r}: the model's classes are {', '.join(classes)}"
        return
    outcome.existing = _existing(trace, outcome.row)
    if outcome.existing is not None and not replace:
        outcome.refused = (
            f"already labelled {outcome.existing.value!r} by {outcome.existing.source.source_id}; "
            "use --replace to change it"
        )


def _trace_and_row(given: FeedbackRow) -> tuple[str, int]:
    if given.row is None:
        return parse_prediction_id(given.prediction_id)
    try:
        row = int(given.row)
    except (TypeError, ValueError):
        raise ValueError(f"row {given.row!r} is not a whole number") from None
    if row < 0:
        raise ValueError(f"row {row} is negative")
    trace_id = given.prediction_id
    if ":" in trace_id:  # a full prediction id and a row: they must agree
        trace_id, id_row = parse_prediction_id(trace_id)
        if id_row != row:
            raise ValueError(f"the id says row {id_row}, the row column {row}")
    if not trace_id:
        raise ValueError("no id")
    return trace_id, row


def _trace(trace_id: str) -> Any | None:
    """The trace, or None where the store has none with this id (any other failure is raised: nothing written)."""
    try:
        return mlflow.MlflowClient().get_trace(trace_id)
    except MlflowException as exc:
        if exc.error_code in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _existing(trace: Any, row: int) -> Any | None:
    """The valid true label already on (trace, row), if any."""
    name = expectation_name(row)
    for assessment in trace.info.assessments or []:
        if assessment.name == name and assessment.expectation is not None and assessment.valid is not False:
            return assessment
    return None


def _write(outcome: Outcome, who: AssessmentSource) -> None:
    metadata = {"row": str(outcome.row), "prediction_id": f"{outcome.trace_id}:{outcome.row}"}
    name = expectation_name(outcome.row)
    expectation = Expectation(name=name, value=outcome.given.label, source=who, metadata=metadata)
    if outcome.existing is not None:
        # MLflow marks the old one invalid in the same write, and keeps it: who said what stays on the trace.
        expectation.overrides = outcome.existing.assessment_id
    mlflow.log_assessment(trace_id=outcome.trace_id, assessment=expectation)
    outcome.written = "written" if outcome.existing is None else f"replaced {outcome.existing.value!r}"
