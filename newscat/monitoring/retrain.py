"""`newscat retrain NAME@ALIAS`: a challenger trained on the original data plus the labelled live traffic.

The served model's traced answers that received true labels over the window (read from the traces `newscat
feedback` tagged as labelled, not from all the traffic), with their texts (kept in the trace with
NEWSCAT_TRACE_TEXTS=on, or given with the label by `newscat feedback`), and the labels `newscat prune-traces`
kept from deleted traces, are split by time: the newest share (at least `min_holdout(alpha)` rows, the fewest with
which McNemar's exact test can pass) is held out and never trained on; the rest joins the original training rows. A
held-out text that is a near-duplicate (`near_duplicate_keys`) of a training text is dropped. The study starts from
the served model's params (its first trial) with its whole recorded recipe (`champion_recipe`: text length, pooling,
frozen layers, dropout, ...), registers the result with alias `challenger` (its version tags and card name the live
window), and the gate faces it with the served model twice, on the held-out recent traffic (where it must be
significantly better) and on the original test split (where it must not be worse by more than `max_test_drop`, nor
significantly). With `promote=auto` it becomes champion only when it passes both.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from newscat.config import Config, window_seconds
from newscat.data.load import load_news, text_key
from newscat.errors import NewscatError
from newscat.monitoring.live import LiveWindow, log_live_datasets, read_labelled_window, traces_experiment_id
from newscat.monitoring.monitor import MonitorError, resolve_version
from newscat.monitoring.retention import kept_labels
from newscat.registry.evaluations import verify_test_split
from newscat.registry.gate import GateDecision
from newscat.registry.promotion import promote_with_gate
from newscat.registry.tags import VersionTags
from newscat.registry.versions import append_description, set_version_tags, version_model_id
from newscat.tracking.datasets import dataset_record
from newscat.tracking.models import logged_params
from newscat.training.job import TuneOutcome, tune_and_register
from newscat.training.recipe import champion_recipe, logged_value
from newscat.training.search_space import DEFAULT_SPACE

log = logging.getLogger("newscat")
LIVE_WINDOW_TAG = "newscat.live_window"  # on the challenger's version: the traces it learned from
LIVE_ROWS_TAG = "newscat.live_rows"
RESTORE_DATA = "retrain from a version trained on the data as it is now (retrain reads only the version's own data)"
HEAD_WORDS = 8  # texts that agree on their first this many normalized words are near-duplicates


class RetrainError(NewscatError):
    """Nothing to retrain from: no labelled live answers with their texts."""


@dataclass(frozen=True)
class LiveRows:
    """Labelled live answers, oldest first, split by time into rows to learn from and newer rows held out."""

    train: pd.DataFrame  # text, label (a class name), timestamp_ms
    holdout: pd.DataFrame
    window: LiveWindow
    leaked: int = 0  # newer answers not held out after all: their text is among the training rows too


@dataclass(frozen=True)
class RetrainOutcome:
    tuned: TuneOutcome
    live: LiveRows
    on_recent: GateDecision
    on_test: GateDecision
    promoted: bool

    def text(self) -> str:
        w = self.live.window
        lines = [
            f"challenger: {self.tuned.registered_model} version {self.tuned.version}, trained on the original rows and "
            f"{len(self.live.train)} labelled live texts; {len(self.live.holdout)} newer ones held out"
            + (f" ({self.live.leaked} more dropped: their texts are training rows too)" if self.live.leaked else ""),
            f"live window: {w.source}",
            "gate on the held-out recent traffic:",
            self.on_recent.table(),
            "gate on the original test split:",
            self.on_test.table(),
        ]
        verdict = "passed both gates" if self.on_recent.passed and self.on_test.passed else "did not pass both gates"
        moved = "; promoted to champion" if self.promoted else ""
        lines.append(f"the challenger {verdict}{moved}")
        return "\n".join(lines)


def retrain(target: str, cfg: Config, *, work_dir: Path, now_ms: int | None = None) -> RetrainOutcome:
    """Train, register and gate a challenger for the model `target` points at (NAME@ALIAS or NAME/VERSION)."""
    version = resolve_version(target)
    model_id = version_model_id(version)
    tags = VersionTags.from_tags(version.tags)
    original = tags.data_config()
    if original is None or model_id is None:
        raise MonitorError(f"{target} records no training data or LoggedModel: it cannot be retrained from here")
    live = labelled_live_rows(cfg, model_id, now_ms)
    folder = work_dir / f"retrain-{version.name}-{int(time.time())}"
    live = write_retrain_data(target, tags, live, folder, seed=cfg.seed)
    check_holdout(live, cfg)  # before any training: a held-out split the gate can never pass on is refused now
    params = logged_params(model_id)
    recipe = champion_recipe(params, study_params(tags.parent_run_id))
    tuned = tune_and_register(retrain_config(cfg, folder / "train", tags, params, version.name, recipe))
    number = str(tuned.version)
    set_version_tags(
        version.name,
        number,
        {
            LIVE_WINDOW_TAG: live.window.source,
            LIVE_ROWS_TAG: f"{len(live.train)} trained on, {len(live.holdout)} held out",
        },
    )
    append_description(version.name, number, live_card_section(live, target, str(version.version)))
    log_live_datasets(tuned.parent_run_id, live.window, live.train, live.holdout)
    gate = {"metric": cfg.promote.metric, "margin": cfg.promote.margin, "alpha": cfg.promote.alpha, "seed": cfg.seed}
    alias = target.partition("@")[2] or "champion"
    recent = promote_with_gate(
        version.name, version=number, to_alias=alias, source=str(folder / "recent"), move=False, **gate
    )
    on_test = promote_with_gate(
        version.name,
        version=number,
        to_alias=alias,
        source=None,  # the challenger's own data folder, whose test.csv is the original test split, as read then
        move=cfg.promote.mode == "auto" and recent.decision.passed,
        max_drop=cfg.retrain.max_test_drop,  # a guard here: no regression on the old test rows
        reason=f"retrained on live traffic; passed on the held-out recent traffic (run {recent.run_id})",
        **gate,
    )
    return RetrainOutcome(tuned, live, recent.decision, on_test.decision, on_test.moved)


def write_retrain_data(target: str, tags: VersionTags, live: LiveRows, folder: Path, *, seed: int) -> LiveRows:
    """Write the retrain's data folders from the served version's own data, read as it was, and the live rows:
    `train` (its training rows and the live ones, its pinned test split as test.csv) and `recent` (the held-out
    live rows as test.csv). Returns the live rows as used: none of the test split's texts is trained on."""
    original = tags.data_config()
    if original is None:
        raise MonitorError(f"{target} records no training data: it cannot be retrained from here")
    data = load_news(replace(original, max_train_samples=None), seed=seed)
    # The gate's "original test split" must be the one the served version was tested on, and none of it trained on.
    verify_test_split(target, tags, original, dataset_record(data.test, original.source, "test"), remedy=RESTORE_DATA)
    live = without_test_rows(live, data.test)
    live = without_leaks(live, set(data.train["text"]) | set(data.validation["text"]))
    write_data(folder / "train", data, live.train, test=data.test)
    write_data(folder / "recent", data, pd.DataFrame(columns=["text", "label"]), test=_encoded(live.holdout, data))
    return live


def min_holdout(alpha: float) -> int:
    """The fewest held-out rows with which the gate can pass at `alpha`: McNemar's exact (two-sided binomial) test
    on n discordant pairs, all won by the challenger, gives p = min(1, 2 * 0.5**n), so it needs the smallest n with
    2 * 0.5**n < alpha (6 at alpha 0.05, 8 at 0.01); each discordant pair is a held-out row."""
    n = 1
    while 2 * 0.5**n >= alpha:
        n += 1
    return n


def labelled_live_rows(cfg: Config, model_id: str, now_ms: int | None = None) -> LiveRows:
    """The window's answers with a true label and their text (the trace's, else the one given with the feedback),
    read from the labelled traces alone (`read_labelled_window`), and the labels prune-traces kept for the window,
    oldest first, split by time (newest held out)."""
    experiment_id = traces_experiment_id(cfg.monitor.experiment, model_id)
    if experiment_id is None:
        raise RetrainError(f"no experiment {cfg.monitor.experiment!r} holds traces: nothing to learn from")
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    since_ms = now_ms - window_seconds(cfg.retrain.since) * 1000
    # Only the labelled traces are read, each answer's text the trace's or the one its feedback carried.
    window = read_labelled_window(experiment_id, model_id, since_ms, now_ms)
    columns = ["trace_id", "row", "timestamp_ms", "text", "true_label"]
    labelled = window.answers
    kept = kept_labels(experiment_id, model_id, since_ms, now_ms)
    if len(kept) and len(labelled):  # a trace kept but not deleted (a prune that stopped): read once, live
        live_keys = set(zip(labelled["trace_id"], labelled["row"].astype(int), strict=True))
        kept = kept[[(t, int(r)) not in live_keys for t, r in zip(kept["trace_id"], kept["row"], strict=True)]]
    parts = [frame[columns] for frame in (labelled, kept) if len(frame)]
    labelled = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    with_text = labelled[labelled["text"].notna()]
    held = max(min_holdout(cfg.promote.alpha), round(len(with_text) * cfg.retrain.holdout_share))
    needed = max(cfg.retrain.min_live_rows, held + 1)  # at least one row to learn from beside the held-out ones
    if len(with_text) < needed:
        why = f"retrain.min_live_rows {cfg.retrain.min_live_rows}"
        if needed > cfg.retrain.min_live_rows:
            alpha = cfg.promote.alpha
            why = f"{held} to hold out, the fewest with which McNemar's exact test can pass at alpha {alpha}"
        no_text = (
            ""
            if len(with_text) == len(labelled)
            else (
                f"; {len(labelled) - len(with_text)} of them without their text: serve with NEWSCAT_TRACE_TEXTS=on, or "
                "give the texts with the labels (a `text` column in the `newscat feedback` file)"
            )
        )
        raise RetrainError(
            f"{len(with_text)} labelled live answers with their texts in the last {cfg.retrain.since}, "
            f"at least {needed} needed ({why}){no_text}"
        )
    rows = with_text.sort_values(["timestamp_ms", "trace_id", "row"])
    rows = pd.DataFrame({"text": rows["text"], "label": rows["true_label"], "timestamp_ms": rows["timestamp_ms"]})
    return LiveRows(rows.iloc[:-held].reset_index(drop=True), rows.iloc[-held:].reset_index(drop=True), window)


def near_duplicate_keys(text: str) -> tuple[str, ...]:
    """What makes two texts near-duplicates: the same words once case, punctuation, digits and spacing are gone (a
    headline re-sent with another date, price or dash), or, for texts of at least `HEAD_WORDS` words, the same first
    `HEAD_WORDS` of them (the same story with another tail: a source, an update). Two texts are near-duplicates when
    they share a key: linear in the texts, no dependency."""
    words = re.sub(r"[\W\d_]+", " ", str(text).casefold()).split()
    keys = ("all:" + " ".join(words),)
    return (*keys, "head:" + " ".join(words[:HEAD_WORDS])) if len(words) >= HEAD_WORDS else keys


def _keys_of(texts: Iterable[str]) -> set[str]:
    return {key for text in texts for key in near_duplicate_keys(text)}


def without_leaks(live: LiveRows, original: set[str]) -> LiveRows:
    """The held-out answers minus those whose text is a training row's, or a near-duplicate of one
    (`near_duplicate_keys`; an earlier live answer or an original row): the gate must score the challenger on texts
    it never saw, or a repeated headline wins it the gate."""
    known = _keys_of(original) | _keys_of(live.train["text"])
    leaked = live.holdout["text"].map(lambda text: not known.isdisjoint(near_duplicate_keys(text))).astype(bool)
    if leaked.all():
        raise RetrainError(
            f"all {len(live.holdout)} held-out answers repeat texts of the training rows (or nearly): nothing new to "
            "gate on"
        )
    holdout = live.holdout[~leaked].reset_index(drop=True)
    return replace(live, holdout=holdout, leaked=live.leaked + int(leaked.sum()))


def check_holdout(live: LiveRows, cfg: Config) -> None:
    """Refuse a held-out split too small for the gate ever to pass (once the near-duplicates left it)."""
    needed = min_holdout(cfg.promote.alpha)
    if len(live.holdout) < needed:
        dropped = f" ({live.leaked} more repeated training texts, or nearly, and were dropped)" if live.leaked else ""
        raise RetrainError(
            f"the held-out split has {len(live.holdout)} rows{dropped}; McNemar's exact test at alpha "
            f"{cfg.promote.alpha} needs at least {needed} discordant pairs, so at least {needed} held-out rows: label "
            "more live answers, widen retrain.since, or raise promote.alpha"
        )


def without_test_rows(live: LiveRows, test: pd.DataFrame) -> LiveRows:
    """The live training rows minus those whose text is a row of the test split (as `text_key` compares texts): a
    served test headline labelled by a user must not make the challenger learn the test split."""
    in_test = live.train["text"].map(text_key).isin(set(test["text"].map(text_key)))
    if in_test.any():
        log.info("%d labelled live text(s) repeat rows of the original test split: not trained on", int(in_test.sum()))
    return replace(live, train=live.train[~in_test].reset_index(drop=True))


def write_data(folder: Path, data: Any, live_train: pd.DataFrame, *, test: pd.DataFrame) -> None:
    """A data folder newscat reads (train.csv, test.csv with text and label names, classes.txt in the model's class
    order): the original training rows (validation included: the new study draws its own) plus `live_train`, less
    any row whose text is a row of `test` (the data may repeat a text across its splits)."""
    names = list(data.label_names)
    folder.mkdir(parents=True)
    (folder / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    original = pd.concat([data.train, data.validation])
    train = pd.concat(
        [
            pd.DataFrame({"text": original["text"], "label": [names[i] for i in original["label"]]}),
            live_train[["text", "label"]],
        ]
    )
    in_test = train["text"].map(text_key).isin(set(test["text"].map(text_key)))
    if in_test.any():
        log.info("%d training row(s) repeat a test row's text: left out of the retrain's training data", in_test.sum())
    train[~in_test].to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"text": test["text"], "label": [names[i] for i in test["label"]]}).to_csv(
        folder / "test.csv", index=False
    )


def _encoded(rows: pd.DataFrame, data: Any) -> pd.DataFrame:
    to_id = {name: i for i, name in enumerate(data.label_names)}
    return pd.DataFrame({"text": rows["text"], "label": rows["label"].map(to_id)})


def study_params(run_id: str) -> dict[str, str]:
    """The flat config the champion's study run logged ({} where no run is recorded or it is gone: the LoggedModel's
    own params still give the recipe that made its weights)."""
    if not run_id:
        return {}
    try:
        return dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException as exc:
        log.warning("the champion's study run %s cannot be read (%s): its recipe comes from its model", run_id, exc)
        return {}


def retrain_config(
    cfg: Config,
    source: Path,
    tags: VersionTags,
    params: dict[str, str],
    name: str,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """The tune config of the retrain: the data folder, the served model's base model and recipe (`champion_recipe`),
    a study of its own whose first trial is the served model's params, registered under the same name, never
    promoted by the job itself."""
    first = {k: logged_value(v) for k, v in params.items() if k in DEFAULT_SPACE}
    space = dict(cfg.tune.search_space or {})
    space["enqueue"] = [first, *space.get("enqueue", ())]
    recipe = recipe or {}
    return replace(
        cfg,
        # Every row of the folder is trained on: a subsample would drop most of the live rows it exists for.
        data=replace(
            cfg.data, source=str(source), text_columns=("text",), label_column="label", max_train_samples=None
        ),
        model=replace(cfg.model, name=tags.base_model or cfg.model.name, **recipe.get("model", {})),
        train=replace(cfg.train, **recipe.get("train", {})),
        tune=replace(
            cfg.tune,
            study_name=f"{cfg.tune.study_name}-retrain-{int(time.time())}",
            n_trials=cfg.retrain.n_trials,
            search_space=space,
        ),
        promote=replace(cfg.promote, mode="none"),  # gated below, on the recent traffic and the test split
        registered_model=name,
    )


def live_card_section(live: LiveRows, target: str, served_version: str) -> str:
    w = live.window
    return (
        "\n\n## Live data\n\n"
        f"Retrained from {target} (version {served_version}) on its original training rows plus "
        f"{len(live.train)} labelled answers it served (traces of LoggedModel {w.model_id} between "
        f"{pd.Timestamp(w.since_ms, unit='ms')} and {pd.Timestamp(w.until_ms, unit='ms')} UTC, source `{w.source}`). "
        f"The newest {len(live.holdout)} labelled answers were held out, never trained on: the gate compared this "
        "version with the served one on them and on the original test split."
    )
