"""The tags of a registered version, as one typed object: the only place that knows their names.

Every writer (the main job, alias moves, evaluations, checks) and every reader (promotion, resume, `newscat evaluate`)
goes through this module, so a tag cannot be written under one name and read under another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from newscat.config import DataConfig
from newscat.redaction import redact_url
from newscat.tracking.limits import TAG_VALUE_LIMIT

TEST_METRICS = ("accuracy", "macro_f1", "ece")  # logged as tags `test_<name>` for a glance in the registry UI
TRIAL_RUN_ID = "trial_run_id"  # searched for by `versions.find_version` (a resume must not register twice)
EVALUATION_LAST = "evaluation.last_run_id"
CHECKS_LAST = "checks.last_run_id"
CHECKS_FAILED = "checks.failed"
HISTORY_TAG = "newscat.alias_history"  # on the registered model: the recorded alias moves, JSON
ALIASES_TAG = "newscat.aliases"  # on the registered model: alias -> version as newscat last set it, JSON


@dataclass(frozen=True)
class VersionTags:
    """Where a registered version came from: its study, trial and runs, its weights, data and test scores."""

    study: str = ""
    trial: int | None = None
    parent_run_id: str = ""
    trial_run_id: str = ""
    weights_run_id: str = ""
    weights_sha256: str = ""
    train_rows: int | None = None
    data_source: str = ""
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    train_digest: str = ""
    test_fraction: float | None = None  # cuts the test split off the data when it has none (None: older versions)
    test_digest: str = ""  # MLflow's dataset digest of the test split (its first 10,000 rows and row count)
    test_sha256: str = ""  # every test row, in order (see `tracking.datasets.rows_sha256`)
    test_rows: int | None = None
    base_model: str = ""
    seed: int | None = None
    test_metrics: Mapping[str, float] = field(default_factory=dict)
    evaluations: Mapping[str, str] = field(default_factory=dict)  # data digest -> run that evaluated on it

    def to_tags(self) -> dict[str, str]:
        """The registry's tag names and string values (unset fields are left out)."""
        tags: dict[str, Any] = {
            "study": self.study,
            "trial": self.trial,
            "parent_run_id": self.parent_run_id,
            TRIAL_RUN_ID: self.trial_run_id,
            "weights_run_id": self.weights_run_id,
            "weights_sha256": self.weights_sha256,
            "train_rows": self.train_rows,
            "data.source": redact_url(self.data_source),  # a data URL's password is never stored
            "data.text_columns": ",".join(self.text_columns),
            "data.label_column": self.label_column,
            "data.train_digest": self.train_digest,
            "data.test_fraction": self.test_fraction,
            "data.test_digest": self.test_digest,
            "data.test_sha256": self.test_sha256,
            "data.test_rows": self.test_rows,
            "base_model": self.base_model,
            "seed": self.seed,
            **{evaluation_tag(digest): run_id for digest, run_id in self.evaluations.items()},
            **{f"test_{k}": f"{v:.4f}" for k, v in self.test_metrics.items() if k in TEST_METRICS},
        }
        return {k: str(v)[:TAG_VALUE_LIMIT] for k, v in tags.items() if v not in (None, "")}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> VersionTags:
        """Read a version's tags back (versions registered by older releases may lack some: defaults then)."""
        prefix, suffix = "evaluation.", ".run_id"
        return cls(
            study=tags.get("study", ""),
            trial=_int(tags.get("trial")),
            parent_run_id=tags.get("parent_run_id", ""),
            trial_run_id=tags.get(TRIAL_RUN_ID, ""),
            weights_run_id=tags.get("weights_run_id", ""),
            weights_sha256=tags.get("weights_sha256", ""),
            train_rows=_int(tags.get("train_rows")),
            data_source=tags.get("data.source", ""),
            text_columns=tuple(tags.get("data.text_columns", "text").split(",")),
            label_column=tags.get("data.label_column", "label"),
            train_digest=tags.get("data.train_digest", ""),
            test_fraction=_float(tags.get("data.test_fraction")),
            test_digest=tags.get("data.test_digest", ""),
            test_sha256=tags.get("data.test_sha256", ""),
            test_rows=_int(tags.get("data.test_rows")),
            base_model=tags.get("base_model", ""),
            seed=_int(tags.get("seed")),
            test_metrics={k: float(tags[f"test_{k}"]) for k in TEST_METRICS if f"test_{k}" in tags},
            evaluations={
                k[len(prefix) : -len(suffix)]: v
                for k, v in tags.items()
                if k.startswith(prefix) and k.endswith(suffix) and k != EVALUATION_LAST
            },
        )

    def data_config(self, source: str | None = None) -> DataConfig | None:
        """The data this version was trained on, read as it was: source, columns and the test split's fraction (or
        `source` read the same way); None when neither is known."""
        source = source or self.data_source
        if not source:
            return None
        split = {} if self.test_fraction is None else {"test_fraction": self.test_fraction}
        return DataConfig(source=source, text_columns=self.text_columns, label_column=self.label_column, **split)

    def test_split_inputs(self) -> str:
        """What forms the version's test split, in words (for errors and logs)."""
        fraction = "not recorded: 0.2 assumed" if self.test_fraction is None else f"{self.test_fraction:g}"
        return (
            f"source {redact_url(self.data_source)}, text columns {','.join(self.text_columns)}, label column "
            f"{self.label_column}, test_fraction {fraction} (used where the data has no test split of its own)"
        )


def evaluation_tag(digest: str) -> str:
    """The tag naming the run that evaluated a version on the data with this digest."""
    return f"evaluation.{digest}.run_id"


def move_tags(alias: str, *, when_by: str, reason: str, forced: bool, evidence: str) -> dict[str, str]:
    """Tags recording a move of `alias` onto a version: who and when, why, forced or not, the evidence run."""
    tags = {
        f"moved_to.{alias}": when_by,
        f"moved_to.{alias}.reason": reason[:TAG_VALUE_LIMIT],
        f"moved_to.{alias}.forced": str(forced).lower(),
    }
    if evidence:
        tags[f"moved_to.{alias}.evidence"] = evidence
    return tags


def left_tag(alias: str) -> str:
    """The tag recording when, by whom and why `alias` left a version."""
    return f"left.{alias}"


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None
