"""Whether this machine runs bf16 math natively (used for training, and by the served model's `auto` choice)."""

from __future__ import annotations


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
