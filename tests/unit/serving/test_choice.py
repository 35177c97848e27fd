from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from newscat.serving.choice import Choice, Platform, resolve

GATED = {
    "onnx": True,
    "default": {"backend": "onnx", "precision": "int8"},
    "passed": ["onnx/int8", "onnx/fp32", "torch/bf16", "torch/fp32"],  # fastest first
}
CPU = Platform(torch=True, onnxruntime=True, cuda=False, native_bf16=True)
GPU = Platform(torch=True, onnxruntime=True, cuda=True, native_bf16=True)
TORCH_FREE = Platform(torch=False, onnxruntime=True, cuda=False, native_bf16=False)


@pytest.mark.parametrize(
    ("serving", "platform", "env", "expected"),
    [
        (GATED, CPU, {}, Choice("onnx", "int8", "cpu")),  # the gate's default
        (GATED, GPU, {}, Choice("onnx", "int8", "cpu")),  # no override: the recorded default, even beside a GPU
        (GATED, GPU, {"NEWSCAT_DEVICE": "cuda"}, Choice("torch", "bf16", "cuda")),  # the GPU on request
        (GATED, GPU, {"NEWSCAT_BACKEND": "torch"}, Choice("torch", "bf16", "cuda")),
        (GATED, GPU, {"NEWSCAT_DEVICE": "cpu"}, Choice("onnx", "int8", "cpu")),
        (GATED, TORCH_FREE, {}, Choice("onnx", "int8", "cpu")),
        (GATED, CPU, {"NEWSCAT_BACKEND": "torch"}, Choice("torch", "bf16", "cpu")),
        (GATED, CPU, {"NEWSCAT_PRECISION": "FP32"}, Choice("onnx", "fp32", "cpu")),
        (GATED, CPU, {"NEWSCAT_BACKEND": "torch", "NEWSCAT_PRECISION": "int8"}, Choice("torch", "int8", "cpu")),
        # the recorded default serves even where a faster path also passed (int8 passed, fp32 was chosen)
        ({**GATED, "default": {"backend": "onnx", "precision": "fp32"}}, CPU, {}, Choice("onnx", "fp32", "cpu")),
        (
            {**GATED, "default": {"backend": "onnx", "precision": "fp32"}},
            CPU,
            {"NEWSCAT_BACKEND": "onnx"},
            Choice("onnx", "fp32", "cpu"),
        ),
        ({**GATED, "default": {"backend": "torch", "precision": "bf16"}}, CPU, {}, Choice("torch", "bf16", "cpu")),
        (GATED, Platform(True, True, False, False), {"NEWSCAT_BACKEND": "torch"}, Choice("torch", "fp32", "cpu")),
        ({}, CPU, {}, Choice("torch", "fp32", "cpu")),  # a model logged before the gate: torch fp32
    ],
)
def test_the_recorded_default_serves_unless_overridden(
    serving: dict, platform: Platform, env: dict[str, str], expected: Choice
) -> None:
    assert resolve(serving, platform, env) == expected


def test_the_reason_says_recorded_default_fallback_or_override() -> None:
    assert resolve(GATED, CPU, {}).reason == "the recorded default onnx/int8"
    no_runtime = resolve(GATED, Platform(torch=True, onnxruntime=False, cuda=False, native_bf16=False), {})
    assert no_runtime == Choice("torch", "fp32", "cpu")  # the first passed path this machine runs
    assert no_runtime.reason == (
        "the recorded default onnx/int8 cannot run here (onnxruntime is not installed): serving torch/fp32 instead"
    )
    bf16 = {**GATED, "default": {"backend": "torch", "precision": "bf16"}}
    no_bf16 = resolve(bf16, Platform(torch=True, onnxruntime=True, cuda=False, native_bf16=False), {})
    assert no_bf16 == Choice("onnx", "int8", "cpu") and "no native bf16" in no_bf16.reason
    override = resolve(GATED, CPU, {"NEWSCAT_BACKEND": "torch", "NEWSCAT_PRECISION": "auto"})
    assert override.reason == "override NEWSCAT_BACKEND=torch (the recorded default is onnx/int8)"


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
