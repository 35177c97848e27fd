from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from newscat.serving.choice import Choice, Platform, resolve

GATED = {
    "onnx": True,
    "default": {"backend": "onnx", "precision": "int8"},
    "passed": ["torch/fp32", "onnx/int8", "onnx/fp32", "torch/bf16"],
}
CPU = Platform(torch=True, onnxruntime=True, cuda=False, native_bf16=True)
GPU = Platform(torch=True, onnxruntime=True, cuda=True, native_bf16=True)
TORCH_FREE = Platform(torch=False, onnxruntime=True, cuda=False, native_bf16=False)


@pytest.mark.parametrize(
    ("serving", "platform", "env", "expected"),
    [
        (GATED, CPU, {}, Choice("onnx", "int8", "cpu")),  # the gate's default
        (GATED, GPU, {}, Choice("torch", "bf16", "cuda")),  # a GPU runs torch
        (GATED, GPU, {"NEWSCAT_DEVICE": "cpu"}, Choice("onnx", "int8", "cpu")),
        (GATED, TORCH_FREE, {}, Choice("onnx", "int8", "cpu")),
        (GATED, CPU, {"NEWSCAT_BACKEND": "torch"}, Choice("torch", "bf16", "cpu")),
        (GATED, CPU, {"NEWSCAT_PRECISION": "FP32"}, Choice("onnx", "fp32", "cpu")),
        (GATED, CPU, {"NEWSCAT_BACKEND": "torch", "NEWSCAT_PRECISION": "int8"}, Choice("torch", "int8", "cpu")),
        # int8 failed the gate: auto never picks it, bf16 only where the hardware runs it natively
        ({**GATED, "passed": ["torch/fp32", "onnx/fp32"]}, CPU, {}, Choice("onnx", "fp32", "cpu")),
        ({**GATED, "default": {"backend": "torch", "precision": "bf16"}}, CPU, {}, Choice("torch", "bf16", "cpu")),
        (GATED, Platform(True, True, False, False), {"NEWSCAT_BACKEND": "torch"}, Choice("torch", "fp32", "cpu")),
        ({}, CPU, {}, Choice("torch", "fp32", "cpu")),  # a model logged before the gate: torch fp32
    ],
)
def test_auto_follows_the_gate_and_the_machine(
    serving: dict, platform: Platform, env: dict[str, str], expected: Choice
) -> None:
    assert resolve(serving, platform, env) == expected


@pytest.mark.parametrize(
    ("serving", "platform", "env", "message"),
    [
        (GATED, CPU, {"NEWSCAT_BACKEND": "tensorrt"}, "NEWSCAT_BACKEND='tensorrt': use auto, torch, onnx"),
        (GATED, CPU, {"NEWSCAT_PRECISION": "fp8"}, "NEWSCAT_PRECISION='fp8': use auto, fp32, bf16, int8"),
        (GATED, CPU, {"NEWSCAT_DEVICE": "cuda"}, "NEWSCAT_DEVICE=cuda: no CUDA device is visible"),
        (GATED, GPU, {"NEWSCAT_DEVICE": "cuda", "NEWSCAT_BACKEND": "onnx"}, "needs NEWSCAT_BACKEND=torch"),
        (GATED, CPU, {"NEWSCAT_BACKEND": "onnx", "NEWSCAT_PRECISION": "bf16"}, "runs fp32 or int8"),
        ({}, CPU, {"NEWSCAT_BACKEND": "onnx"}, "logged without ONNX files"),
        (GATED, TORCH_FREE, {"NEWSCAT_BACKEND": "torch"}, "needs torch, which is not installed here"),
        (GATED, Platform(True, False, False, False), {"NEWSCAT_BACKEND": "onnx"}, "onnxruntime is not installed"),
    ],
)
def test_impossible_choices_fail_at_load_with_what_to_do(
    serving: dict, platform: Platform, env: dict[str, str], message: str
) -> None:
    with pytest.raises(MlflowException, match=message) as info:
        resolve(serving, platform, env)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_platform_detection_reports_this_machine() -> None:
    import torch

    platform = Platform.detect()
    assert platform.torch and platform.onnxruntime
    assert platform.cuda == torch.cuda.is_available()
