"""The `newscat` command line: each command builds its inputs, makes one library call and prints."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from newscat import __version__
from newscat.config import GATE_METRICS, TUNE_OPTIONS, Option, values
from newscat.errors import NewscatError
from newscat.logs import configure_logging
from newscat.names import PromoteMode
from newscat.redaction import mask_passwords_in_output, redact_url


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


class _Group(click.Group):
    """Answers every command's bad input with one line, never a traceback: newscat's own errors, and MLflow's
    (a tracking server's 401/403 says what to set). No password of a URL quoted in them is printed."""

    def invoke(self, ctx: click.Context) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return super().invoke(ctx)
        except NewscatError as exc:
            raise click.ClickException(redact_url(str(exc))) from exc
        except MlflowException as exc:
            raise click.ClickException(redact_url(server_refusal(exc) or exc.message)) from exc


def server_refusal(exc: Exception) -> str | None:
    """A clear message for an authentication (401) or permission (403) error from the tracking server."""
    code = exc.get_http_status_code() if hasattr(exc, "get_http_status_code") else None
    server = redact_url(os.environ.get("MLFLOW_TRACKING_URI", "the tracking server"))
    if code == 401:
        return (
            f"{server} refused the request: not authenticated (HTTP 401). Set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to an account of that server (docs/operations.md, 'A shared tracking server "
            "with authentication')."
        )
    if code == 403:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
        return (
            f"{server} refused the request: {user} lacks the permission (HTTP 403). Ask an admin of the server "
            "for EDIT or MANAGE on the experiment or registered model."
        )
    return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="newscat")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Fine-tune a BERT-family model to sort news into topics, tune it with Optuna,
    track it in MLflow, register it and serve it."""
    mask_passwords_in_output()  # before anything logs: MLflow's, Optuna's and newscat's lines alike
    configure_logging(verbose)


def _click_option(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option generated from one declaration in `newscat.config.TUNE_OPTIONS`."""
    text = f"{option.help} [default: {option.default_text()}]"
    if option.kind == "flag":
        dashed = option.flag[2:]
        return click.option(f"--{dashed}/--no-{dashed}", option.name, default=None, help=text)
    kinds = {"int": INT, "float": FLOAT, "file": OrUnset(click.Path(dir_okay=False))}
    kind = OrUnset(click.Choice(option.choices)) if option.choices else kinds.get(option.kind)
    return click.option(option.flag, option.name, type=kind, callback=_empty_is_unset, help=text)


def tune_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every `newscat tune` flag, in declaration order."""
    for option in reversed(TUNE_OPTIONS):
        command = _click_option(option)(command)
    return command


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    callback=_empty_is_unset,
    help="YAML/JSON file with config sections data/model/train/tune/promote; flags override it.",
)
@tune_options
def tune(config_file: str | None, **values: Any) -> None:
    """Tune, track and register: an Optuna study around the Hugging Face Trainer.

    Every trial is a nested MLflow run under the study's run. The best trial's params are then
    refit on more training rows (a nested `refit` run) when the trials used a subsample; that model
    is scored on the test split, logged as a pyfunc model and registered with alias `challenger`.
    Rerunning with the same --study-name and --storage resumes the study.
    """
    from newscat.config import (
        build_config,
        overrides_from_options,
        read_config_file,
        refuse_passwords_logged_by_mlflow_run,
    )
    from newscat.training.job import tune_and_register

    refuse_passwords_logged_by_mlflow_run(values, os.environ)  # first: nothing of the job runs with a leaked one
    file_values = read_config_file(config_file) if config_file else {}
    cfg = build_config(file_values, overrides_from_options(values), environ=os.environ)
    outcome = tune_and_register(cfg)
    click.echo(json.dumps(outcome.__dict__, indent=2, default=str))
    if outcome.ui:
        store = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
        start = "" if store.startswith(("http://", "https://")) else f" (mlflow ui --backend-store-uri {store})"
        click.echo(f"Models of this experiment in the MLflow UI{redact_url(start)}: {outcome.ui}")


@main.command()
@click.argument("name")
@click.option("--from", "from_alias", default="challenger", show_default=True, help="Alias of the version to move.")
@click.option("--version", help="Version number to move instead of --from.")
@click.option("--to", "to_alias", default="champion", show_default=True, help="Alias to move.")
@click.option("--data", help="Data to judge both versions on (default: the data the challenger was trained on).")
@click.option("--metric", type=click.Choice(GATE_METRICS), default="accuracy", show_default=True, help="Gate metric.")
@click.option("--margin", type=float, default=0.0, show_default=True, help="Required gain over the current holder.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level of McNemar's test.")
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="With no champion yet, the test accuracy the new version must reach to become champion.",
)
@click.option("--force", is_flag=True, help="Move the alias even if the gate refuses (recorded on the version).")
@click.option("--reason", default="", help="Why you are moving it; recorded with the move.")
def promote(name: str, from_alias: str, version: str | None, to_alias: str, **gate_options: Any) -> None:
    """Move alias --to of registered model NAME to a better version, through the gate.

    Both versions are scored on the same test split. The move happens only if the new version beats
    the current holder of --to by more than --margin and McNemar's exact test on the paired
    predictions gives p < --alpha (or nothing holds --to yet). The comparison table is printed
    either way and logged to a run in experiment `newscat-promotions`; the move is tagged on the
    versions (who, when, why) and the champion it replaces stays reachable as `previous-champion`.
    Example: `newscat promote newscat --from challenger --to champion`.
    """
    from newscat.registry.promotion import promote_with_gate

    result = promote_with_gate(
        name,
        from_alias=None if version else from_alias,
        version=version,
        to_alias=to_alias,
        source=gate_options.pop("data"),
        **gate_options,
    )
    click.echo(result.decision.table())
    click.echo(f"evidence: run {result.run_id}")
    if result.moved:
        forced = " (FORCED past the gate)" if result.forced else ""
        click.echo(f"{name}@{to_alias} -> version {result.decision.challenger}{forced}")
    else:
        raise click.ClickException(f"{name}@{to_alias} not moved; use --force to override (it is recorded)")


@main.command()
@click.argument("name")
@click.option("--reason", default="rollback", show_default=True, help="Why; recorded with the move.")
def rollback(name: str, reason: str) -> None:
    """Point NAME@champion back at NAME@previous-champion (the champion before the last move).

    The version rolled back from becomes previous-champion, so a second rollback undoes the first.
    """
    from newscat.registry.versions import rollback as roll_back

    version = roll_back(name, reason=reason)
    click.echo(f"{name}@champion -> version {version.version} (rolled back)")


@main.command()
@click.argument("name")
def audit(name: str) -> None:
    """Report alias moves of registered model NAME that newscat did not make.

    Every alias newscat sets (challenger, champion, previous-champion) is recorded on the registered
    model. An alias moved in the MLflow UI (the alias editor, *Promote model*) or through the REST API
    bypasses the gate and its audit trail; this lists each such alias and exits with status 1.
    """
    from newscat.registry.audit import audit as audit_model

    report = audit_model(name)
    click.echo(report.text())
    if report.findings:
        raise click.ClickException(f"{len(report.findings)} alias move(s) of {name} bypassed newscat's gate")


@main.command()
@click.argument("model_uri")
@click.option(
    "--data",
    help="Hub dataset id, AG News CSV directory or CSV/JSON/JSONL/Parquet file(s). Default: the data a "
    "registered version was trained on.",
)
@click.option("--text-columns", help="Comma-separated text column(s) of files / Hub data.")
@click.option("--label-column", help="Label column of files / Hub data.")
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Seed of the validation split; a test split carved from files without one never moves with it.",
)
def evaluate(model_uri: str, data: str | None, text_columns: str | None, label_column: str | None, seed: int) -> None:
    """Evaluate MODEL_URI on a test split and log the report to a run (experiment `newscat-evaluations`).

    The report holds accuracy, macro-F1, per-class precision/recall/F1/support, the confusion matrix
    and a reliability diagram (PNG), the expected calibration error, the most confident mistakes and
    the data's source, split, digest and row count. A registered version is tagged with the run.
    """
    from newscat.registry.evaluations import evaluate_uri, evaluation_data

    columns = tuple(c.strip() for c in text_columns.split(",")) if text_columns else None
    cfg = evaluation_data(model_uri, data, text_columns=columns, label_column=label_column)
    metrics, run_id = evaluate_uri(model_uri, cfg, seed=seed)
    shown = {k: round(v, 4) for k, v in metrics.items() if k in ("accuracy", "macro_f1", "ece")}
    click.echo(json.dumps({"model_uri": model_uri, "run_id": run_id, **shown}, indent=2))


@main.command()
@click.argument("model_uri")
@click.option("--strict", is_flag=True, help="Exit with status 1 when any check fails.")
def check(model_uri: str, strict: bool) -> None:
    """Behavioural checks of MODEL_URI on built-in cases; prints the report and logs it to a run.

    MFT: unambiguous headlines must get their topic. INV: swapping person or place names must not
    change the topic. DIR: adding a sentence about a topic must not lower its probability. Failures
    are counted and listed, and a registered version is tagged with the run and the count.
    """
    from newscat.registry.evaluations import check_uri

    report, run_id = check_uri(model_uri)
    click.echo(report.text())
    click.echo(f"logged to run {run_id}")
    if strict and report.failed:
        raise click.ClickException(f"{report.failed} behavioural check(s) failed")


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
@click.option(
    "--layout",
    type=click.Choice(["table", "ag_news"]),
    default="table",
    show_default=True,
    help="ag_news: a headerless AG News CSV (label, title, description); the text is title + description.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=256, show_default=True, help="Texts per batch.")
@click.option(
    "--spark",
    is_flag=True,
    help="Score on Spark with mlflow.pyfunc.spark_udf (needs pyspark and Java); -o is then a folder of JSON parts "
    "with a `row` column in input order; -i may be CSV (header), Parquet or JSON lines, a file or a folder.",
)
@click.option("--master", default="local[*]", show_default=True, help="Spark master URL (with --spark).")
@click.option("--partitions", type=click.IntRange(1), help="Repartition the input into this many tasks (with --spark).")
def predict(
    model_uri: str,
    source: str,
    output: str,
    text_column: str,
    layout: str,
    batch_size: int,
    spark: bool,
    master: str,
    partitions: int | None,
) -> None:
    """Score texts with any model URI, e.g. models:/newscat@champion or runs:/<id>/model."""
    from newscat.batch.files import predict_texts, read_texts

    if spark:
        from newscat.batch.spark import predict_with_spark

        if source == "-" or output == "-":
            raise click.UsageError("--spark reads -i PATH and writes -o FOLDER (no stdin/stdout)")
        count = predict_with_spark(
            model_uri, source, output, text_column=text_column, layout=layout, master=master, partitions=partitions
        )
        click.echo(f"scored {count} text(s) on Spark ({master}) into {output}", err=True)
        return
    texts = read_texts(source, text_column, layout)
    with click.open_file(output, "w", encoding="utf-8") as out:
        count = predict_texts(model_uri, texts, batch_size=batch_size, out=out)
    click.echo(f"scored {count} text(s)", err=True)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", help="Who gives these labels, recorded with each (default: the OS user).")
@click.option("--replace", is_flag=True, help="Replace a true label already given for the same prediction.")
@click.option("--skip-unknown", is_flag=True, help="Write the other rows when some ids are not in the store.")
def feedback(file: Path, source: str | None, replace: bool, skip_unknown: bool) -> None:
    """Attach true labels to served predictions, as MLflow expectations on their traces.

    FILE is CSV (with a header) or JSON lines (.jsonl) with `id` (the `prediction_id` the server answered with
    NEWSCAT_TRACING=on, e.g. tr-...:0), `label` and optionally `text` (the text answered, kept for `newscat
    retrain` where the server did not keep texts). Every row is checked first (the trace exists, the row and the
    label are the model's, the text is the one answered, no other label given before unless --replace); one
    refused row and nothing is written: the report says why per row, lists the unknown ids, and the exit status
    is 1. A label given again is a no-op (unchanged), so a file can be sent twice.
    """
    from newscat.monitoring.feedback import attach_feedback, read_feedback

    report = attach_feedback(read_feedback(file), source=source, replace=replace, skip_unknown=skip_unknown)
    click.echo(report.text())
    if report.refused:  # the report's last line already says what happened
        raise click.exceptions.Exit(1)


def _config_option(text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--config FILE` of the loop's commands ('' from MLproject: not set)."""
    return click.option(
        "--config", "config_file", type=OrUnset(click.Path(dir_okay=False)), callback=_empty_is_unset, help=text
    )


@main.command()
@click.argument("target", metavar="NAME@ALIAS")
@click.option(
    "--since", callback=_empty_is_unset, help="The live window: the last N minutes/hours/days (30m, 12h, 7d)."
)
@click.option(
    "--experiment",
    callback=_empty_is_unset,
    help="Experiment the server traces to (default: the model's own experiment, the server's default).",
)
@_config_option("YAML/JSON file whose `monitor` section sets the window and the thresholds; flags override it.")
def monitor(target: str, since: str | None, experiment: str | None, config_file: str | None) -> None:
    """Drift and live accuracy of the model NAME@ALIAS (or NAME/VERSION) points at, from its traces.

    Compares the live window's traced answers with the training reference logged beside the model (drift per
    feature: length, tokens, unknown-token share, truncation, predicted label, confidence), measures accuracy on
    the answers given true labels by `newscat feedback`, reads the trace writers' coverage (requests served,
    traced, lost), logs a run with the drift report, and prints a summary ending in the verdict.

    \b
    Exit status (docs/monitoring.md):
      0  healthy: drift judged on enough texts (and coverage, where recorded) and nothing failed
      1  unhealthy: drift or live accuracy beyond the config's thresholds
      3  not judged: too little evidence (too few texts, or too many requests lost to tracing)
      4  error, no verdict: the store failed a read, no training reference, Evidently missing, bad config
      2  is click's: a usage error (bad option or argument)
    """
    from newscat.monitoring.verdict import EXIT_ERROR

    try:
        report = _monitor(target, since, experiment, config_file)
    except (Exception, KeyboardInterrupt) as exc:  # a scheduler must tell "no verdict" from "unhealthy" (exit 1)
        click.echo(f"newscat monitor: ERROR, no verdict (exit {EXIT_ERROR}): {_error_message(exc)}", err=True)
        logging.getLogger("newscat").debug("newscat monitor failed", exc_info=True)
        raise click.exceptions.Exit(EXIT_ERROR) from exc
    click.echo(report.text())
    raise click.exceptions.Exit(report.verdict.exit_code)


def _monitor(target: str, since: str | None, experiment: str | None, config_file: str | None) -> Any:
    from newscat.config import build_config, read_config_file
    from newscat.monitoring.monitor import monitor as run_monitor

    file_values = read_config_file(config_file) if config_file else {}
    cfg = build_config(file_values, {"monitor.since": since, "monitor.experiment": experiment})
    return run_monitor(target, cfg.monitor)


def _error_message(exc: BaseException) -> str:
    """One line for a failed command, as `_Group` words it (MLflow's refusals explained), no password in it."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, NewscatError):
        message = str(exc)
    elif isinstance(exc, MlflowException):
        message = server_refusal(exc) or exc.message
    elif isinstance(exc, KeyboardInterrupt):
        message = "interrupted"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return redact_url(message)


@main.command()
@click.argument("target", metavar="NAME@ALIAS")
@click.option("--since", callback=_empty_is_unset, help="Learn from the labelled traffic of the last 30m, 12h, 7d ...")
@click.option(
    "--promote",
    type=OrUnset(click.Choice(values(PromoteMode))),
    callback=_empty_is_unset,
    help="auto: the challenger becomes champion if it passes the gate on both the recent traffic and the test split.",
)
@_config_option("YAML/JSON config (the one the served model was tuned with; its `retrain` section); flags override it.")
def retrain(target: str, since: str | None, promote: str | None, config_file: str | None) -> None:
    """Retrain the model NAME@ALIAS points at on its original data plus its labelled live answers.

    The answers given true labels (`newscat feedback`) with their texts (kept in the traces with
    NEWSCAT_TRACE_TEXTS=on, or given in the feedback file), and the labels `prune-traces` kept, are split by time:
    the newest `retrain.holdout_share` (at least the fewest rows with which the gate can pass at promote.alpha: 6
    at 0.05) is never trained on. A study starting from the served model's
    params registers a `challenger`; the gate compares it with the served model on those held-out answers (it must
    win there) and on the original test split (it must not regress: `retrain.max_test_drop`), and with
    --promote auto moves the alias only if it passes both.
    """
    from newscat.config import build_config, read_config_file
    from newscat.monitoring.retrain import retrain as run_retrain

    file_values = read_config_file(config_file) if config_file else {}
    cfg = build_config(file_values, {"retrain.since": since, "promote.mode": promote}, environ=os.environ)
    outcome = run_retrain(target, cfg, work_dir=Path(cfg.train.work_dir))
    click.echo(outcome.text())


@main.command("prune-traces")
@click.argument("target", required=False, default="")
@click.option("--older-than", "older_than", required=True, help="Delete traces started before this: 90d, 12h, 30m.")
@click.option("--experiment", default="", help="Experiment the server traces to (default: TARGET's own experiment).")
def prune_traces(target: str, older_than: str, experiment: str) -> None:
    """Trace retention: delete the served model's traces older than a window, keeping their true labels.

    TARGET (NAME@ALIAS or NAME/VERSION) names the served model: its traces live in its LoggedModel's experiment
    unless the server was given NEWSCAT_TRACE_EXPERIMENT (then pass that as --experiment). The labelled rows are
    kept first (a `kept-labels` run in that experiment, which `newscat retrain` reads), then the traces are
    deleted in chunks.
    """
    from newscat.monitoring.retention import prune_traces as prune

    outcome = prune(older_than, target=target, experiment=experiment)
    click.echo(outcome.text(older_than))
