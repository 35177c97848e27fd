"""Inference precision: `NEWSCAT_PRECISION`, and whether this machine runs bf16 natively."""

from __future__ import annotations

import os

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

PRECISION_ENV = "NEWSCAT_PRECISION"
BF16_MIN_TOKENS = 256  # padded tokens in a batch below which bf16 runs as fp32 (measured: slower on one headline)


def native_bf16() -> bool:
    """Whether this machine runs bf16 math natively (a bf16-capable GPU, or an AVX512-BF16 / AMX CPU).

    Elsewhere bf16 is emulated and slower than fp32, so `auto` precision means fp32 there.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def use_bf16(precision: str) -> bool:
    """Whether to train under bf16 autocast: asked for, or `auto` on hardware with native bf16 math."""
    return native_bf16() if precision == "auto" else precision == "bf16"


def serving_precision() -> str:
    """`NEWSCAT_PRECISION`: auto (default: bf16 where the hardware runs it natively, else fp32), fp32, bf16
    (autocast) or int8 (dynamic quantization; measured 0.5 points less accurate on AG News, so never automatic)."""
    value = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "fp32", "bf16", "int8"):
        raise MlflowException(
            f"{PRECISION_ENV}={value!r}: use auto, fp32, bf16 or int8", error_code=INVALID_PARAMETER_VALUE
        )
    if value == "auto":
        return "bf16" if native_bf16() else "fp32"
    return value
