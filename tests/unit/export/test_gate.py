from __future__ import annotations

import numpy as np
import pytest

from newscat.config import build_config
from newscat.export.gate import Timing, candidates, decide


def _probs(predicted: list[int], classes: int = 4) -> np.ndarray:
    out = np.full((len(predicted), classes), 0.1)
    out[np.arange(len(predicted)), predicted] = 0.7
    return out


def test_the_fastest_path_that_agrees_and_keeps_accuracy_is_the_default() -> None:
    labels = np.array([0, 1, 2, 3] * 250)  # 1,000 texts
    reference = labels.copy()
    reference[:100] = (labels[:100] + 1) % 4  # torch fp32: 90.0%
    int8 = reference.copy()
    int8[100:106] = (labels[100:106] + 1) % 4  # 6 more mistakes: 99.4% agreement, -0.6 points
    fp32 = reference.copy()
    bf16 = reference.copy()
    bf16[:3] = labels[:3]  # 3 labels differ (99.7%), each now right: +0.3 points
    decision = decide(
        {
            "torch/fp32": _probs(reference),
            "onnx/int8": _probs(int8),
            "onnx/fp32": _probs(fp32),
            "torch/bf16": _probs(bf16),
        },
        labels,
        {
            "torch/fp32": Timing(100.0, 12.0),
            "onnx/int8": Timing(500.0, 3.0),
            "onnx/fp32": Timing(250.0, 6.0),
            "torch/bf16": Timing(333.0, 6.0),  # faster than onnx/fp32 at batch 64, as fast on one item
        },
        onnx=True,
    )
    scores = {s.path: s for s in decision.scores}
    assert not scores["onnx/int8"].passed and scores["onnx/int8"].agreement == 0.994
    assert scores["torch/bf16"].passed and scores["onnx/fp32"].passed
    assert decision.default == "torch/bf16"  # sqrt(3.33 x 2) beats sqrt(2.5 x 2); int8 would win but failed
    assert scores["torch/bf16"].speedup == pytest.approx(np.sqrt(3.33 * 2))
    assert decision.settings()["passed"] == ["torch/bf16", "onnx/fp32", "torch/fp32"]  # fastest first
    metrics = decision.metrics()
    assert metrics["onnx_int8_accuracy"] == 0.894 and metrics["torch_fp32_texts_per_s"] == 100
    assert metrics["onnx_int8_one_item_ms"] == 3.0 and metrics["torch_fp32_speedup"] == 1.0
    assert decision.tags()["newscat.serving.default"] == "torch/bf16"


def test_an_accuracy_loss_beyond_three_tenths_of_a_point_fails_even_with_high_agreement() -> None:
    labels = np.zeros(2000, dtype=int)
    int8 = labels.copy()
    int8[:7] = 1  # 99.65% agreement, but -0.35 points
    decision = decide(
        {"torch/fp32": _probs(labels), "onnx/int8": _probs(int8)},
        labels,
        {"torch/fp32": Timing(10, 10), "onnx/int8": Timing(50, 2)},
        onnx=True,
    )
    assert [s.passed for s in decision.scores] == [True, False] and decision.default == "torch/fp32"


def test_candidates_leave_out_what_cannot_run() -> None:
    every = ("onnx/int8", "onnx/fp32", "torch/bf16")
    assert candidates(every, onnx=True, native_bf16=False) == ["torch/fp32", "onnx/int8", "onnx/fp32"]
    assert candidates(every, onnx=False, native_bf16=True) == ["torch/fp32", "torch/bf16"]  # the export failed
    assert candidates(("onnx/fp32",), onnx=True, native_bf16=True) == ["torch/fp32", "onnx/fp32"]
    assert candidates((), onnx=False, native_bf16=True) == ["torch/fp32"]
    from_config = candidates(build_config({}).model.serving_paths, onnx=True, native_bf16=False)
    assert [type(p) for p in from_config] == [str, str, str], from_config  # logged and recorded as words


def test_the_card_table_has_a_header_cell_for_every_row_cell() -> None:
    from newscat.export.package import serving_table

    labels = np.array([0, 1, 2, 3] * 25)
    decision = decide(
        {"torch/fp32": _probs(labels), "onnx/int8": _probs(labels)},
        labels,
        {"torch/fp32": Timing(10, 10), "onnx/int8": Timing(50, 2)},
        onnx=True,
    )
    lines = serving_table(decision).splitlines()
    widths = {line.count("|") for line in lines if line.startswith("|")}
    assert len(lines) >= 4 and widths == {8}  # 7 cells: path, accuracy, agreement, texts/s, ms, speed-up, passed
    assert lines[3] == "| onnx/int8 | 1.0000 | 1.0000 | 50 | 2.0 | 5.00 | yes (default) |"  # sqrt(5 x 5)
