"""Which engine serves a model: `NEWSCAT_BACKEND`, `NEWSCAT_PRECISION` and `NEWSCAT_DEVICE` against what the
model's accuracy gate allowed when it was logged and what this machine has.

`auto` everywhere means: a CUDA GPU runs torch; otherwise the fastest path that passed the gate (its decision is in
the model's settings), with bf16 only where the hardware runs it natively.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

BACKEND_ENV = "NEWSCAT_BACKEND"
PRECISION_ENV = "NEWSCAT_PRECISION"
DEVICE_ENV = "NEWSCAT_DEVICE"
CHOICES = {
    BACKEND_ENV: ("auto", "torch", "onnx"),
    PRECISION_ENV: ("auto", "fp32", "bf16", "int8"),
    DEVICE_ENV: ("auto", "cpu", "cuda"),
}
ONNX_PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Choice:
    """The engine that serves: backend (torch | onnx), precision (fp32 | bf16 | int8), device (cpu | cuda)."""

    backend: str
    precision: str
    device: str

    def __str__(self) -> str:
        return f"{self.backend} {self.precision} on {self.device}"


@dataclass(frozen=True)
class Platform:
    """What this machine and environment offer."""

    torch: bool
    onnxruntime: bool
    cuda: bool
    native_bf16: bool

    @classmethod
    def detect(cls) -> Platform:
        has_torch = _installed("torch")
        cuda = bf16 = False
        if has_torch:
            import torch

            from newscat.serving.precision import native_bf16

            cuda, bf16 = torch.cuda.is_available(), native_bf16()
        return cls(has_torch, _installed("onnxruntime"), cuda, bf16)


def _installed(module: str) -> bool:
    """Whether `module` can be imported here (an import hook that refuses it counts as not installed)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def setting(env: Mapping[str, str], name: str) -> str:
    """One of the three switches, checked."""
    value = env.get(name, "auto").strip().lower() or "auto"
    if value not in CHOICES[name]:
        raise _invalid(f"{name}={value!r}: use {', '.join(CHOICES[name])}")
    return value


def resolve(serving: Mapping[str, Any], platform: Platform, env: Mapping[str, str] | None = None) -> Choice:
    """The engine for a model whose gate decision is `serving` (the `serving` entry of its settings; empty for
    models logged before the ONNX backend existed)."""
    env = os.environ if env is None else env
    backend, precision, device = (setting(env, name) for name in (BACKEND_ENV, PRECISION_ENV, DEVICE_ENV))
    passed = set(serving.get("passed", ["torch/fp32"]))
    if device == "cuda" and not platform.cuda:
        raise _invalid(f"{DEVICE_ENV}=cuda: no CUDA device is visible to torch here")
    backend = _backend(backend, device, serving, platform)
    device = "cuda" if backend == "torch" and device != "cpu" and platform.cuda else "cpu"
    if precision == "auto":
        precision = _auto_precision(backend, passed, platform)
    if backend == "onnx" and precision not in ONNX_PRECISIONS:
        raise _invalid(
            f"{PRECISION_ENV}={precision}: the ONNX backend runs fp32 or int8 ({BACKEND_ENV}=torch for bf16)"
        )
    return Choice(backend, precision, device)


def _backend(asked: str, device: str, serving: Mapping[str, Any], platform: Platform) -> str:
    """torch or onnx: as asked (if installed and logged); for auto, torch on a GPU, else the gate's default."""
    has_onnx = bool(serving.get("onnx"))
    if asked == "auto":
        gpu = device == "cuda" or (device == "auto" and platform.cuda)
        prefers_onnx = serving.get("default", {}).get("backend") == "onnx" and not gpu
        if has_onnx and platform.onnxruntime and (prefers_onnx or not platform.torch):
            return "onnx"
        asked = "torch"
    if asked == "onnx":
        if device == "cuda":
            raise _invalid(f"{DEVICE_ENV}=cuda needs {BACKEND_ENV}=torch (the ONNX engine here runs on the CPU)")
        if not has_onnx:
            raise _invalid(f"{BACKEND_ENV}=onnx: this model was logged without ONNX files; use torch")
        if not platform.onnxruntime:
            raise _invalid(f"{BACKEND_ENV}=onnx: onnxruntime is not installed here (pip install onnxruntime)")
        return "onnx"
    if not platform.torch:
        raise _invalid(
            "the torch backend needs torch, which is not installed here: install the CPU build "
            "(pip install torch --index-url https://download.pytorch.org/whl/cpu) or serve a model with ONNX files"
        )
    return "torch"


def _auto_precision(backend: str, passed: set[str], platform: Platform) -> str:
    """The fastest precision of `backend` that passed the model's accuracy gate (and that this hardware runs)."""
    if backend == "onnx":
        return "int8" if "onnx/int8" in passed else "fp32"
    return "bf16" if "torch/bf16" in passed and platform.native_bf16 else "fp32"


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
