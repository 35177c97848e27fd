"""Which engine serves: the path the model's accuracy gate recorded as its default, unless `NEWSCAT_BACKEND`,
`NEWSCAT_PRECISION` or `NEWSCAT_DEVICE` override it.

With no override a model serves exactly the recorded default (the path the release gated, scored and reported),
on the CPU; only when this machine cannot run it (no onnxruntime, no native bf16) does it fall back, and the reason
says so. An override is honoured and reported as one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from newscat.names import ServingPath

BACKEND_ENV = "NEWSCAT_BACKEND"
PRECISION_ENV = "NEWSCAT_PRECISION"
DEVICE_ENV = "NEWSCAT_DEVICE"
CHOICES = {
    BACKEND_ENV: ("auto", "torch", "onnx"),
    PRECISION_ENV: ("auto", "fp32", "bf16", "int8"),
    DEVICE_ENV: ("auto", "cpu", "cuda"),
}
ONNX_PRECISIONS = ("fp32", "int8")
REFERENCE = ServingPath.TORCH_FP32  # what every model can be served with where torch is installed


@dataclass(frozen=True)
class Choice:
    """The engine that serves: backend (torch | onnx), precision (fp32 | bf16 | int8), device (cpu | cuda)."""

    backend: str
    precision: str
    device: str
    reason: str = field(default="", compare=False)  # why this engine: the recorded default, a fallback, an override

    @property
    def path(self) -> str:
        return f"{self.backend}/{self.precision}"

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
    models logged before the ONNX backend existed, whose default is torch fp32). `Choice.reason` says why."""
    env = os.environ if env is None else env
    asked = {name: setting(env, name) for name in (BACKEND_ENV, PRECISION_ENV, DEVICE_ENV)}
    recorded = recorded_default(serving)
    overrides = {name: value for name, value in asked.items() if value != "auto"}
    if not overrides:
        missing = _cannot_run(recorded, serving, platform)
        if missing is None:
            return Choice(*recorded.split("/"), "cpu", reason=f"the recorded default {recorded}")
        fallback = _fallback(serving, platform)
        return Choice(
            *fallback.split("/"),
            "cpu",
            reason=f"the recorded default {recorded} cannot run here ({missing}): serving {fallback} instead",
        )
    choice = _overridden(asked, serving, platform, recorded)
    said = ", ".join(f"{name}={value}" for name, value in overrides.items())
    return dataclasses.replace(choice, reason=f"override {said} (the recorded default is {recorded})")


def recorded_default(serving: Mapping[str, Any]) -> str:
    """The gate's default path (`backend/precision`); torch fp32 for a model logged before the gate existed."""
    default = serving.get("default") or {"backend": "torch", "precision": "fp32"}
    return f"{default['backend']}/{default['precision']}"


def _cannot_run(path: str, serving: Mapping[str, Any], platform: Platform) -> str | None:
    """Why this machine cannot run `path`, or None when it can."""
    backend, precision = path.split("/")
    if backend == "onnx":
        if not serving.get("onnx"):
            return "the model has no ONNX files"
        return None if platform.onnxruntime else "onnxruntime is not installed"
    if not platform.torch:
        return "torch is not installed"
    if precision == "bf16" and not platform.native_bf16:
        return "this hardware has no native bf16"
    return None


def _fallback(serving: Mapping[str, Any], platform: Platform) -> str:
    """The first path that passed the gate (in the gate's order of preference) that this machine can run."""
    for path in [*serving.get("passed", []), REFERENCE]:
        if _cannot_run(path, serving, platform) is None:
            return path
    raise _invalid(
        "this machine can run none of the model's serving paths: install onnxruntime (pip install onnxruntime) "
        "or the CPU build of torch (pip install torch --index-url https://download.pytorch.org/whl/cpu)"
    )


def _overridden(asked: Mapping[str, str], serving: Mapping[str, Any], platform: Platform, recorded: str) -> Choice:
    """The engine when at least one switch is set: the switches, completed from the recorded decision."""
    backend, precision, device = asked[BACKEND_ENV], asked[PRECISION_ENV], asked[DEVICE_ENV]
    passed = set(serving.get("passed", [REFERENCE]))
    if device == "cuda" and not platform.cuda:
        raise _invalid(f"{DEVICE_ENV}=cuda: no CUDA device is visible to torch here")
    backend = _backend(backend, device, serving, platform)
    device = "cuda" if backend == "torch" and device != "cpu" and platform.cuda else "cpu"
    if precision == "auto":
        precision = _auto_precision(backend, passed, platform, recorded)
    if backend == "onnx" and precision not in ONNX_PRECISIONS:
        raise _invalid(
            f"{PRECISION_ENV}={precision}: the ONNX backend runs fp32 or int8 ({BACKEND_ENV}=torch for bf16)"
        )
    return Choice(backend, precision, device)


def _backend(asked: str, device: str, serving: Mapping[str, Any], platform: Platform) -> str:
    """torch or onnx: as asked (if installed and logged); for auto, torch on a GPU, else the recorded backend."""
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


def _auto_precision(backend: str, passed: set[str], platform: Platform, recorded: str) -> str:
    """The recorded default's precision when `backend` is the recorded one; else the fastest precision of `backend`
    that passed the model's accuracy gate (and that this hardware runs)."""
    recorded_backend, recorded_precision = recorded.split("/")
    if backend == recorded_backend and (recorded_precision != "bf16" or platform.native_bf16):
        return recorded_precision
    if backend == "onnx":
        return "int8" if ServingPath.ONNX_INT8 in passed else "fp32"
    return "bf16" if ServingPath.TORCH_BF16 in passed and platform.native_bf16 else "fp32"


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
