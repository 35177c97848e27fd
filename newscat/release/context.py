"""What the release reads, as plain values: the config, the data and its records, where the final weights came from.

The main job (`training/job.py`) builds one `ReleaseContext` at the end of a study; nothing in the release stage
holds an Optuna object or reaches back into training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from newscat.config import Config
from newscat.data.load import NewsData


@dataclass(frozen=True)
class Weights:
    """The final weights: their LoggedModel, the run that trained them, and how many training rows they saw."""

    model_id: str
    run_id: str
    rows: int


@dataclass(frozen=True)
class ReleaseContext:
    """Everything the release of a study's final weights reads."""

    cfg: Config
    data: NewsData
    records: Mapping[str, Mapping[str, Any]]  # per split: source, split name, MLflow dataset digest, rows
    digests: Mapping[str, str]  # per split: the MLflow dataset digest
    study_name: str
    trial: int  # the best trial's number
    trial_run_id: str  # the best trial's MLflow run
    final: Weights
    parent_run_id: str  # the study's run
    recipe: Mapping[str, str]  # the final model's recipe as logged, for the card
