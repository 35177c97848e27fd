"""Mean pooling on a real encoder: padding-free, recorded in config.json, the same in torch and in the ONNX graph."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from newscat.export.onnx import export_onnx
from newscat.serving.backends import OnnxEngine, TorchEngine
from newscat.serving.pooling import CONFIG_KEY, PoolingError, apply_pooling, apply_saved_pooling
from tests.helpers import fresh_classifier

TEXTS = ["Stocks fell on Wall Street", "The league's champions won their fifth straight match on Sunday night"]


@pytest.fixture(scope="module")
def mean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier", pooling="mean")


def _batch(model_dir: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(model_dir)(texts, padding=True, return_tensors="np")
    return encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)


def test_mean_pooling_ignores_padding_and_differs_from_cls(mean_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    engine = TorchEngine(mean_dir, "fp32", "cpu")
    alone = engine(*_batch(mean_dir, TEXTS[:1]))
    padded = engine(*_batch(mean_dir, TEXTS))  # the short text now carries padding
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)
    plain = AutoModelForSequenceClassification.from_pretrained(mean_dir).eval()  # transformers alone: [CLS] pooling
    with torch.inference_mode():
        cls = plain(
            **{
                k: torch.from_numpy(v)
                for k, v in zip(("input_ids", "attention_mask"), _batch(mean_dir, TEXTS[:1]), strict=True)
            }
        ).logits.numpy()
    assert not np.allclose(alone, cls, atol=1e-3)
    assert getattr(plain.config, CONFIG_KEY) == "mean"


def test_the_onnx_graph_pools_as_torch_does(mean_dir: Path) -> None:
    export_onnx(mean_dir)
    ids, mask = _batch(mean_dir, TEXTS)
    np.testing.assert_allclose(
        OnnxEngine(mean_dir, "fp32")(ids, mask), TorchEngine(mean_dir, "fp32", "cpu")(ids, mask), atol=1e-4
    )


def test_pooling_is_applied_once_survives_copies_and_never_goes_back(mean_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(mean_dir).eval()
    apply_saved_pooling(model)
    apply_pooling(model, "mean")  # idempotent: no second pair of hooks
    assert len(model.base_model._forward_pre_hooks) == 1 and len(model.base_model.pooler._forward_pre_hooks) == 1
    assert len(model.base_model._forward_hooks) == 1
    ids, mask = (torch.from_numpy(a) for a in _batch(mean_dir, TEXTS))
    with torch.inference_mode():
        original = model(input_ids=ids, attention_mask=mask).logits
        copied = copy.deepcopy(model)(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(original, copied)
    with pytest.raises(PoolingError, match="cannot pool by cls"):
        apply_pooling(model, "cls")
    with pytest.raises(PoolingError, match="pooling must be one of cls, mean"):
        apply_pooling(model, "max")


def test_a_forward_on_another_thread_does_not_change_this_ones_answer(mean_dir: Path) -> None:
    """Thread A's forward is paused between its encoder and its pooler while thread B runs a whole forward of
    another batch (another padding) on the same model: A's answer is still the one A gets alone."""
    import threading

    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(mean_dir).eval()
    apply_saved_pooling(model)
    short, both = (tuple(torch.from_numpy(a) for a in _batch(mean_dir, texts)) for texts in (TEXTS[:1], TEXTS))
    with torch.inference_mode():
        expected = model(input_ids=short[0], attention_mask=short[1]).logits
    answers: dict[str, torch.Tensor] = {}

    def run(name: str, ids: torch.Tensor, mask: torch.Tensor) -> None:
        with torch.inference_mode():
            answers[name] = model(input_ids=ids, attention_mask=mask).logits

    def other_forward_meanwhile(module: object, args: tuple, output: object) -> None:
        if threading.current_thread().name == "A" and "B" not in answers:
            other = threading.Thread(target=run, args=("B", *both), name="B")
            other.start()
            other.join()

    model.base_model.encoder.register_forward_hook(other_forward_meanwhile)
    first = threading.Thread(target=run, args=("A", *short), name="A")
    first.start()
    first.join()
    assert set(answers) == {"A", "B"}
    torch.testing.assert_close(answers["A"], expected)
    torch.testing.assert_close(answers["B"][:1], expected, atol=1e-5, rtol=1e-4)  # padding-free for B too


def test_an_encoder_without_a_pooler_is_told_to_use_cls() -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from newscat.config import ConfigError
    from newscat.training.trainer import resolve_pooling

    config = DistilBertConfig(vocab_size=50, dim=16, hidden_dim=32, n_layers=1, n_heads=2)
    model = DistilBertForSequenceClassification(config)
    with pytest.raises(PoolingError, match=r"DistilBertForSequenceClassification has none: set train\.pooling to cls"):
        apply_pooling(model, "mean")
    assert resolve_pooling(model, "auto") == "cls"  # the default takes what the model has
    with pytest.raises(ConfigError, match=r"train\.pooling: pooling=mean needs an encoder with a pooler"):
        resolve_pooling(model, "mean")
