"""True labels for served predictions: MLflow expectations on the traces the served model wrote.

Every row is checked before anything is written: the trace exists and is a newscat prediction trace, the row exists
in it, the label is one of the classes the trace recorded, no (trace, row) comes twice with different labels, and
none already has a different true label (unless replacing). One refused row and nothing is written; the report says
why, row by row. Sending the same label again is a no-op ("unchanged"), so a file can be sent twice; ids the store
does not know are listed, and with `skip_unknown` the other rows are written anyway.

A row may carry the `text` it labels (its SHA-256 must match the one the trace recorded): it is kept on the
expectation, so that `newscat retrain` can learn from answers served without NEWSCAT_TRACE_TEXTS.

Each labelled trace is also tagged `LABELLED_TAG` (before its label is written), so that `newscat retrain` searches
the labelled traces alone; the traces' experiment records, once, since when newscat tags them (`LABELLED_SINCE_TAG`):
traces served before then may carry labels without the tag, and retrain reads those as before (all of them).
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import AssessmentSource, AssessmentSourceType, Expectation
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from newscat.errors import NewscatError
from newscat.serving.tracing import CLASSES_TAG, ROWS_TAG, parse_prediction_id

EXPECTATION_PREFIX = "true_label"  # one expectation per answered text: true_label[<row>]
TEXT_METADATA = "text"  # the labelled text, where the feedback gave it (the trace kept only its SHA-256)
UNKNOWN = "unknown id"  # how a refusal for an id the store does not know starts (`--skip-unknown` skips those)
LABELLED_TAG = "newscat.labelled"  # "true" on a trace a true label was written on: what retrain searches for
# On the traces' experiment: the time (ms) from which every label newscat writes there tags its trace (set once).
LABELLED_SINCE_TAG = "newscat.labelled_tag_since_ms"


class FeedbackFileError(NewscatError):
    """A feedback file that cannot be read as rows of id and label."""


@dataclass(frozen=True)
class FeedbackRow:
    """One true label as given: `where` says where it came from (a file's line, a list's entry)."""

    where: str
    prediction_id: str
    label: str
    row: int | None = None  # given separately when `prediction_id` is a bare trace id
    text: str | None = None  # the text the prediction answered, where the feedback carries it


@dataclass
class Outcome:
    """What became of one row: refused (with why), valid (nothing written: another row was refused), or written."""

    given: FeedbackRow
    trace_id: str = ""
    row: int = -1
    refused: str = ""
    written: str = ""  # "written" or "replaced"
    unchanged: str = ""  # why nothing needs writing: the same label is there already
    skipped: str = ""  # an unknown id, skipped on request
    existing: Any = None  # the expectation already on (trace, row), to replace
    adds_text: bool = False  # the existing label again, with the text it lacked
    tagged: bool = False  # the trace carries LABELLED_TAG already
    experiment_id: str = ""  # the trace's experiment

    def line(self) -> str:
        status = (
            f"REFUSED: {self.refused}"
            if self.refused
            else self.written
            or (self.unchanged and f"unchanged: {self.unchanged}")
            or (self.skipped and f"skipped: {self.skipped}")
            or "valid, not written"
        )
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

    @property
    def unchanged(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.unchanged]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.skipped]

    def unknown_ids(self) -> list[str]:
        """The ids the store does not know (refused or skipped), each once, in the file's order."""
        ids = [o.given.prediction_id for o in self.outcomes if (o.refused or o.skipped).startswith(UNKNOWN)]
        return list(dict.fromkeys(ids))

    def summary(self) -> str:
        total = len(self.outcomes)
        unknown = self.unknown_ids()
        if not self.refused:
            parts = [f"{len(self.written)} true labels written"]
            if self.unchanged:
                parts.append(f"{len(self.unchanged)} unchanged (the same label was there)")
            if self.skipped:
                parts.append(f"{len(self.skipped)} skipped (unknown ids: {', '.join(unknown)})")
            return ", ".join(parts)
        if self.written:
            return f"{len(self.written)} of {total} true labels written before the store failed; send the rest again"
        lines = [f"{len(self.refused)} of {total} rows refused: nothing written"]
        if unknown:
            lines.append(
                f"{len(unknown)} unknown id(s): {', '.join(unknown)} (--skip-unknown writes the other rows anyway)"
            )
        return "\n".join(lines)

    def text(self) -> str:
        return "\n".join([*(o.line() for o in self.outcomes), self.summary()])


def expectation_name(row: int) -> str:
    return f"{EXPECTATION_PREFIX}[{row}]"


def read_feedback(path: Path) -> list[FeedbackRow]:
    """Rows of a CSV file (with a header) or of JSON lines: `id` (a prediction id as the server answered, or a
    trace id with `row`), `label`, and optionally the `text` the prediction answered."""
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
    """A row from a mapping with `id`, `label` and optionally `row` and `text`; what is missing shows up in the
    report."""
    if not isinstance(record, Mapping):
        return FeedbackRow(where, json.dumps(record)[:60], "", None)
    row = record.get("row")
    text = record.get("text")
    return FeedbackRow(
        where,
        "" if record.get("id") is None else str(record["id"]),
        "" if record.get("label") is None else str(record["label"]),
        None if row in (None, "") else row,
        None if text in (None, "") else str(text),  # an empty CSV cell: no text given
    )


def attach_feedback(
    rows: Iterable[FeedbackRow | Mapping[str, Any]],
    *,
    source: str | None = None,
    replace: bool = False,
    skip_unknown: bool = False,
) -> FeedbackReport:
    """Check every row against the tracking store, then log each as an expectation (HUMAN source `source`, default
    the OS user) on its trace; a single refused row and nothing is written. A row whose label is already there is
    left as it is (unchanged); with `skip_unknown` a row whose id the store does not know is skipped, not refused."""
    given = [r if isinstance(r, FeedbackRow) else feedback_row(f"entry {i}", r) for i, r in enumerate(rows, 1)]
    report = FeedbackReport([Outcome(r) for r in given])
    traces: dict[str, Any] = {}
    seen: dict[tuple[str, int], Outcome] = {}
    for outcome in report.outcomes:
        _check(outcome, traces, seen, replace=replace)
        if skip_unknown and outcome.refused.startswith(UNKNOWN):
            outcome.skipped, outcome.refused = outcome.refused, ""
    if report.refused or not report.outcomes:
        return report
    who = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=source or _os_user())
    client = MlflowClient()
    marked: set[str] = set()  # experiments whose LABELLED_SINCE_TAG is known to be there
    tagged: set[str] = set()  # traces tagged LABELLED_TAG in this call
    for outcome in report.outcomes:
        if outcome.unchanged or outcome.skipped:
            continue
        try:
            # The marker before the tag, the tag before the label: a label is never written untagged after the
            # time the experiment says labels are tagged from (a failure leaves at most a tag without a label).
            if outcome.experiment_id and outcome.experiment_id not in marked:
                _mark_experiment(client, outcome.experiment_id)
                marked.add(outcome.experiment_id)
            if not outcome.tagged and outcome.trace_id not in tagged:
                client.set_trace_tag(outcome.trace_id, LABELLED_TAG, "true")
                tagged.add(outcome.trace_id)
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


def _check(outcome: Outcome, traces: dict[str, Any], seen: dict[tuple[str, int], Outcome], *, replace: bool) -> None:
    """Fill in the outcome's trace and row, or why it is refused, or why nothing needs writing."""
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
        first = seen[key]
        if first.given.label == given.label and first.given.text == given.text:
            outcome.unchanged = f"repeats {first.given.where}"  # a file sent with a line twice: nothing to add
        else:
            outcome.refused = f"duplicate of {first.given.where} (same prediction, another label or text)"
        return
    seen[key] = outcome
    if outcome.trace_id not in traces:
        traces[outcome.trace_id] = _trace(outcome.trace_id)
    trace = traces[outcome.trace_id]
    if trace is None:
        outcome.refused = f"{UNKNOWN}: no trace {outcome.trace_id} in the tracking store"
        return
    tags = trace.info.tags
    outcome.tagged = tags.get(LABELLED_TAG) == "true"
    outcome.experiment_id = trace.info.experiment_id or ""
    if CLASSES_TAG not in tags or ROWS_TAG not in tags:
        outcome.refused = f"trace {outcome.trace_id} is not a newscat prediction"
        return
    if outcome.row >= int(tags[ROWS_TAG]):
        outcome.refused = f"{UNKNOWN}: row {outcome.row} of a request that held {tags[ROWS_TAG]} text(s)"
        return
    classes = json.loads(tags[CLASSES_TAG])
    if given.label not in classes:
        outcome.refused = f"unknown label {given.label!r}: the model's classes are {', '.join(classes)}"
        return
    if given.text is not None:
        recorded = _recorded_sha256(trace, outcome.row)
        if recorded and hashlib.sha256(given.text.encode("utf-8", "surrogatepass")).hexdigest() != recorded:
            outcome.refused = "the text is not the one that prediction answered (its SHA-256 differs from the trace's)"
            return
    outcome.existing = _existing(trace, outcome.row)
    if outcome.existing is None:
        return
    by = outcome.existing.source.source_id
    known_text = (outcome.existing.metadata or {}).get(TEXT_METADATA)
    same_label = outcome.existing.value == given.label
    if same_label and (given.text is None or given.text == known_text):
        outcome.unchanged = f"already labelled {given.label!r} by {by}"  # sent again: a no-op, not a refusal
    elif same_label and known_text is None:
        outcome.adds_text = True  # the same label, now with the text retraining needs: written over the old one
    elif not replace:
        outcome.refused = f"already labelled {outcome.existing.value!r} by {by}; use --replace to change it"


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


def _recorded_sha256(trace: Any, row: int) -> str:
    """The SHA-256 the trace recorded for the text of `row` ("" where it recorded none)."""
    for span in trace.data.spans:
        outputs = span.outputs
        if isinstance(outputs, Mapping) and isinstance(outputs.get("predictions"), list):
            for record in outputs["predictions"]:
                if isinstance(record, Mapping) and record.get("row") == row:
                    return str(record.get("sha256") or "")
    return ""


def _existing(trace: Any, row: int) -> Any | None:
    """The valid true label already on (trace, row), if any."""
    name = expectation_name(row)
    for assessment in trace.info.assessments or []:
        if assessment.name == name and assessment.expectation is not None and assessment.valid is not False:
            return assessment
    return None


def _mark_experiment(client: MlflowClient, experiment_id: str) -> None:
    """Record on the experiment, once, since when the labels written there tag their traces (`LABELLED_SINCE_TAG`)."""
    if LABELLED_SINCE_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, LABELLED_SINCE_TAG, str(int(time.time() * 1000)))


def labels_tagged_since(experiment_id: str) -> int | None:
    """The time (ms) from which `newscat feedback` tags every trace it labels in the experiment (`LABELLED_TAG`);
    None where it never did (labels there, if any, were written before it tagged them)."""
    value = MlflowClient().get_experiment(experiment_id).tags.get(LABELLED_SINCE_TAG)
    return int(value) if value is not None else None


def _write(outcome: Outcome, who: AssessmentSource) -> None:
    metadata = {"row": str(outcome.row), "prediction_id": f"{outcome.trace_id}:{outcome.row}"}
    known_text = (outcome.existing.metadata or {}).get(TEXT_METADATA) if outcome.existing is not None else None
    if outcome.given.text is not None:
        metadata[TEXT_METADATA] = outcome.given.text
    elif known_text is not None:  # a label replaced without its text keeps the text (the same prediction's) it had
        metadata[TEXT_METADATA] = known_text
    name = expectation_name(outcome.row)
    expectation = Expectation(name=name, value=outcome.given.label, source=who, metadata=metadata)
    if outcome.existing is not None:
        # MLflow marks the old one invalid in the same write, and keeps it: who said what stays on the trace.
        expectation.overrides = outcome.existing.assessment_id
    mlflow.log_assessment(trace_id=outcome.trace_id, assessment=expectation)
    if outcome.existing is None:
        outcome.written = "written"
    else:
        outcome.written = "text added" if outcome.adds_text else f"replaced {outcome.existing.value!r}"
