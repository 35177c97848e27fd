"""The project's names: every closed set of choices and every role a run or LoggedModel plays, declared once.

StrEnums compare equal to their strings, so values read from a config file, a tag or an MLproject parameter work
unchanged. This module imports nothing of newscat and ships inside every logged model (the serving code reads the
serving paths and poolings from it).
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """Training precision; auto: bf16 autocast where the hardware runs bf16 natively, else fp32."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


class Pruner(StrEnum):
    """The Optuna pruner fed with each evaluation's validation score."""

    MEDIAN = "median"
    RACING = "racing"
    HALVING = "halving"
    HYPERBAND = "hyperband"
    NONE = "none"


class PromoteMode(StrEnum):
    """Whether the main job runs the champion/challenger gate on the version it registers."""

    NONE = "none"
    AUTO = "auto"


class LexicalMode(StrEnum):
    """auto: fit the TF-IDF companion, served mixed in if it wins on validation; off: the encoder alone."""

    AUTO = "auto"
    OFF = "off"


class Pooling(StrEnum):
    """How token states become one vector per text (newscat/serving/pooling.py)."""

    CLS = "cls"
    MEAN = "mean"


class ServingPath(StrEnum):
    """A backend and precision the served model can answer on; torch fp32 is the reference every gate scores."""

    TORCH_FP32 = "torch/fp32"
    ONNX_INT8 = "onnx/int8"
    ONNX_FP32 = "onnx/fp32"
    TORCH_BF16 = "torch/bf16"


# The fast paths the release's accuracy gate may choose from (torch fp32, the reference, is always scored).
FAST_PATHS = (ServingPath.ONNX_INT8, ServingPath.ONNX_FP32, ServingPath.TORCH_BF16)


class Role(StrEnum):
    """What a run or LoggedModel is, in its `newscat.role` tag: searches filter on it, the UI shows it."""

    STUDY = "study"  # the study's parent run
    TRIAL = "trial"
    REFIT = "refit"
    RELEASE = "release"  # the LoggedModel that is registered
    WORKER = "worker"  # a second `mlflow run` worker's own run, pointing at the study's
    EVALUATION = "evaluation"
    CHECKS = "checks"
    PROMOTION = "promotion"
    MONITOR = "monitor"
    TRACE_COVERAGE = "trace-coverage"  # the trace writer's served/traced/lost totals
    KEPT_LABELS = "kept-labels"  # labelled answers kept when their traces were pruned


ROLE_TAG = "newscat.role"
STUDY_TAG = "newscat.study"
TRIAL_TAG = "newscat.trial"
