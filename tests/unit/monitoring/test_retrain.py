"""What a retrain learns from, on real traces in a temporary sqlite store: only labelled answers that kept their
texts, oldest first, the newest share held out; a clear refusal when the texts were not kept; the study it runs
starts from the served model's params; held-out answers that repeat a training text are dropped. (The whole loop,
trained and gated: tests/integration/test_loop.py.)"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from newscat.config import build_config
from newscat.monitoring.feedback import attach_feedback
from newscat.monitoring.retrain import (
    LiveRows,
    RetrainError,
    check_holdout,
    labelled_live_rows,
    min_holdout,
    near_duplicate_keys,
    retrain_config,
    without_leaks,
)
from newscat.registry.tags import VersionTags
from newscat.serving.tracing import TraceSettings
from tests.unit.monitoring.traffic import EXPERIMENT, LABELS, NAME, serve, start_tracer, traffic

CFG = build_config({"monitor": {"experiment": EXPERIMENT}, "retrain": {"since": "1h", "min_live_rows": 10}})


def _answer_and_label(
    champion_id: str, monkeypatch: pytest.MonkeyPatch, *, texts: bool, labelled: int, give_texts: bool = False
) -> list:
    settings = TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion", texts=texts)
    tracer = start_tracer(settings)
    news, probabilities = traffic(np.random.default_rng(5), 25, [0.25] * 4, 10)
    news = [f"{i} {text}" for i, text in enumerate(news)]  # distinct texts, in the order they were sent
    ids = []
    for start in range(0, 25, 5):
        ids += serve(tracer, news[start : start + 5], probabilities[start : start + 5], per_request=5)
        time.sleep(0.005)  # each request its own millisecond: "newest" is well defined
    truth = [LABELS[int(p.argmax())] for p in probabilities]
    rows = [{"id": i, "label": t} for i, t in zip(ids[:labelled], truth, strict=False)]
    if give_texts:  # the desk's file carries the texts it labels
        rows = [{**row, "text": text} for row, text in zip(rows, news, strict=False)]
    assert not attach_feedback(rows).refused
    return list(zip(news, truth, strict=True))


def test_the_older_labelled_answers_are_learned_from_and_the_newest_held_out(
    champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _answer_and_label(champion, monkeypatch, texts=True, labelled=20)
    live = labelled_live_rows(CFG, champion)
    assert list(live.train["text"]) == [text for text, _ in sent[:14]]  # unlabelled answers 21-25 are not used
    assert list(live.holdout["text"]) == [text for text, _ in sent[14:20]]  # 30% of 20, the newest
    assert list(live.train["label"]) == [label for _, label in sent[:14]]
    assert live.window.model_id == champion and live.window.source.startswith("mlflow-traces:")


def test_answers_without_their_texts_are_refused_with_what_to_set(
    champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _answer_and_label(champion, monkeypatch, texts=False, labelled=20)
    with pytest.raises(RetrainError, match="0 labelled live answers with their texts in the last 1h") as raised:
        labelled_live_rows(CFG, champion)
    assert "20 of them without their text: serve with NEWSCAT_TRACE_TEXTS=on" in str(raised.value)


def test_texts_given_with_the_feedback_stand_in_for_texts_the_traces_did_not_keep(
    champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _answer_and_label(champion, monkeypatch, texts=False, labelled=20, give_texts=True)
    live = labelled_live_rows(CFG, champion)
    assert list(live.train["text"]) + list(live.holdout["text"]) == [text for text, _ in sent[:20]]
    assert list(live.holdout["label"]) == [label for _, label in sent[14:20]]


def test_the_study_starts_from_the_served_params_and_never_promotes_by_itself(tmp_path: object) -> None:
    params = {"learning_rate": "5e-05", "batch_size": "16", "epochs": "2", "warmup_ratio": "0.1", "newscat.x": "y"}
    cfg = build_config({"promote": {"mode": "auto"}, "retrain": {"n_trials": 3}})
    tags = VersionTags(base_model="some/bert")
    tuned = retrain_config(cfg, tmp_path / "train", tags, params, "news")  # type: ignore[operator]
    assert tuned.tune.search_space["enqueue"][0] == {
        "learning_rate": 5e-05,
        "batch_size": 16,
        "epochs": 2,
        "warmup_ratio": 0.1,
    }
    assert (tuned.tune.n_trials, tuned.promote.mode, tuned.registered_model) == (3, "none", "news")
    assert tuned.model.name == "some/bert" and tuned.data.text_columns == ("text",)
    assert cfg.data.max_train_samples and tuned.data.max_train_samples is None  # no live row sampled away
    assert tuned.tune.study_name.startswith("newscat-retrain-")


def test_held_out_answers_that_repeat_a_training_text_are_dropped() -> None:
    rows = lambda *texts: pd.DataFrame({"text": list(texts), "label": ["Sports"] * len(texts)})  # noqa: E731
    live = LiveRows(rows("a", "b"), rows("b", "c", "d"), window=None)  # type: ignore[arg-type]
    kept = without_leaks(live, original={"d"})  # "b" is a live training row, "d" an original one
    assert list(kept.holdout["text"]) == ["c"] and kept.leaked == 2
    with pytest.raises(RetrainError, match="all 3 held-out answers repeat texts of the training rows"):
        without_leaks(live, original={"c", "d"})


def test_the_fewest_held_out_rows_follow_from_alpha_as_the_gate_computes_p() -> None:
    from scipy.stats import binomtest

    for alpha in (0.05, 0.01, 0.1, 0.001):
        n = min_holdout(alpha)
        # The gate's own test (registry.gate.mcnemar_exact): n discordant pairs all won pass, n - 1 never can.
        assert binomtest(0, n, 0.5).pvalue < alpha <= binomtest(0, n - 1, 0.5).pvalue, alpha
    assert (min_holdout(0.05), min_holdout(0.01)) == (6, 8)


def test_a_held_out_split_the_gate_can_never_pass_on_is_refused_with_the_numbers() -> None:
    rows = lambda *texts: pd.DataFrame({"text": list(texts), "label": ["Sports"] * len(texts)})  # noqa: E731
    live = LiveRows(rows("a"), rows(*"bcdefg"), window=None)  # type: ignore[arg-type]
    check_holdout(live, CFG)  # 6 rows: enough at alpha 0.05
    short = without_leaks(live, original={"B."})  # "b" comes back as "B.": a near-duplicate, dropped
    with pytest.raises(RetrainError) as refused:
        check_holdout(short, CFG)
    assert str(refused.value) == (
        "the held-out split has 5 rows (1 more repeated training texts, or nearly, and were dropped); McNemar's exact "
        "test at alpha 0.05 needs at least 6 discordant pairs, so at least 6 held-out rows: label more live answers, "
        "widen retrain.since, or raise promote.alpha"
    )
    strict = build_config({"promote": {"alpha": 0.01}})
    with pytest.raises(RetrainError, match=r"at alpha 0\.01 needs at least 8 discordant pairs"):
        check_holdout(live, strict)


def test_near_duplicates_of_training_texts_never_sit_in_the_held_out_split() -> None:
    story = "Stocks rally as the central bank holds rates steady for a third month"
    held = [
        "STOCKS rally as the central bank holds rates steady, for a third month!",  # case, punctuation
        "Stocks rally as the central bank holds rates steady for a 3rd month",  # a digit
        "Stocks rally as the central bank holds rates: traders cheer (Reuters)",  # the same first 8 words
        "Stocks slump as the central bank raises rates for a third month",  # another story
        "Rally",  # short texts match whole only
    ]
    rows = lambda texts: pd.DataFrame({"text": texts, "label": ["Business"] * len(texts)})  # noqa: E731
    live = LiveRows(rows([story, "rally today"]), rows(held), window=None)  # type: ignore[arg-type]
    kept = without_leaks(live, original=set())
    assert list(kept.holdout["text"]) == held[3:] and kept.leaked == 3
    assert near_duplicate_keys(held[0]) == near_duplicate_keys(story)
    assert near_duplicate_keys("Rally") != near_duplicate_keys("rally today")
    # Short texts (no head key) match on the whole text without case, punctuation and digits alone.
    assert near_duplicate_keys("Stocks up 3% on day 2") == near_duplicate_keys("stocks UP 5% on day 3!")
    assert near_duplicate_keys("Stocks up on day 2") != near_duplicate_keys("Stocks down on day 2")


def test_the_challenger_copies_the_champions_whole_recipe(tracking_uri: str, tmp_path: object) -> None:
    """A champion trained with a non-default text length, pooling, frozen layers, dropout, decay and precision (its
    LoggedModel's params, as training.step.model_params logs them) and a study config with a lexical mode, serving
    paths and evaluation pace of its own: the retrain's config is that recipe, whatever the retrain's config says."""
    import mlflow

    from newscat.monitoring.retrain import study_params
    from newscat.training.recipe import champion_recipe

    with mlflow.start_run() as study:  # the champion's study run, with its flat config as tune logs it
        defaults = build_config({})
        tuned = build_config(
            {
                "model": {"lexical": "off", "serving_paths": ["onnx/fp32", "torch/bf16"]},
                "train": {"evals_per_epoch": 4, "refit_samples": 0, "average_weights": False, "max_epochs": 3},
            }
        )
        mlflow.log_params(tuned.to_flat_dict())
    model_params = {
        "learning_rate": "3e-05",
        "batch_size": "16",
        "epochs": "3",
        "warmup_ratio": "0.05",
        "weight_decay": "0.02",
        "base_model": "some/bert",
        "max_length": "64",
        "train_rows": "900",
        "seed": "43",
        "precision": "fp32",
        "freeze_embeddings": "False",
        "frozen_layers": "3",
        "dropout": "model",
        "pooling": "cls",
        "layer_lr_decay": "0.8",
    }
    recipe = champion_recipe(model_params, study_params(study.info.run_id))
    cfg = retrain_config(
        defaults, tmp_path / "train", VersionTags(base_model="some/bert"), model_params, "news", recipe
    )  # type: ignore[operator]
    assert (cfg.model.name, cfg.model.max_length, cfg.model.lexical) == ("some/bert", 64, "off")
    assert cfg.model.serving_paths == ("onnx/fp32", "torch/bf16")
    train = cfg.train
    assert (train.precision, train.freeze_embeddings, train.frozen_layers, train.dropout) == ("fp32", False, 3, "model")
    assert (train.pooling, train.layer_lr_decay) == ("cls", 0.8)
    assert (train.evals_per_epoch, train.refit_samples, train.average_weights, train.max_epochs) == (4, None, False, 3)
    assert (defaults.model.max_length, defaults.train.pooling, defaults.train.frozen_layers) == (128, "auto", "auto")
    assert cfg.tune.search_space["enqueue"][0]["weight_decay"] == 0.02
    # A study run that is gone: the LoggedModel's own params still make the weights' recipe.
    assert champion_recipe(model_params, study_params(""))["model"] == {"max_length": 64}


def test_the_defaults_hold_out_enough_rows_for_the_gate_to_pass_on_a_realistic_retrain() -> None:
    from newscat.registry.gate import mcnemar_exact

    cfg = build_config({})
    held = max(min_holdout(cfg.promote.alpha), round(cfg.retrain.min_live_rows * cfg.retrain.holdout_share))
    assert held == 30
    champion = np.ones(held, bool)
    champion[:8] = False  # the served model is wrong on 8 of the 30 newest labelled answers
    challenger = np.ones(held, bool)
    challenger[8] = False  # the challenger gets those 8 right and one other wrong
    assert mcnemar_exact(challenger, champion)[2] < cfg.promote.alpha
