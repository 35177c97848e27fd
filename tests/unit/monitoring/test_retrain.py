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
from newscat.monitoring.retrain import LiveRows, RetrainError, labelled_live_rows, retrain_config, without_leaks
from newscat.registry.tags import VersionTags
from newscat.serving.tracing import TraceSettings
from tests.unit.monitoring.traffic import EXPERIMENT, LABELS, NAME, serve, start_tracer, traffic

CFG = build_config({"monitor": {"experiment": EXPERIMENT}, "retrain": {"since": "1h", "min_live_rows": 10}})


def _answer_and_label(champion_id: str, monkeypatch: pytest.MonkeyPatch, *, texts: bool, labelled: int) -> list:
    settings = TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion", texts=texts)
    tracer = start_tracer(settings)
    news, probabilities = traffic(np.random.default_rng(5), 25, [0.25] * 4, 10)
    news = [f"{i} {text}" for i, text in enumerate(news)]  # distinct texts, in the order they were sent
    ids = []
    for start in range(0, 25, 5):
        ids += serve(tracer, news[start : start + 5], probabilities[start : start + 5], per_request=5)
        time.sleep(0.005)  # each request its own millisecond: "newest" is well defined
    truth = [LABELS[int(p.argmax())] for p in probabilities]
    assert not attach_feedback([{"id": i, "label": t} for i, t in zip(ids[:labelled], truth, strict=False)]).refused
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
