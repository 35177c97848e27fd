"""Whether this machine runs bf16 math natively: training asks of its GPU when it has one, serving of the CPU."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

log = logging.getLogger("newscat")

# Ampere (compute capability 8.0) is the first GPU generation with bf16 tensor cores; older GPUs report bf16 as
# supported (torch.cuda.is_bf16_supported) but emulate it, slower than fp32.
MIN_BF16_CAPABILITY = (8, 0)
# CPU features that run bf16 matrix math natively (AMX tiles, or AVX512-BF16 dot products).
BF16_CPU_FLAGS = frozenset({"amx_tile", "avx512_bf16"})
_CPU_PROBES = {"amx_tile": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}


@dataclass(frozen=True)
class Hardware:
    """What decides native bf16: the CUDA device's compute capability (None: no GPU), and the CPU's bf16 flags."""

    capability: tuple[int, int] | None
    cpu_flags: frozenset[str]
    name: str

    @classmethod
    def detect(cls, device: str = "auto") -> Hardware:
        """The hardware that runs `device`'s math: for `auto`, this machine's GPU (device 0) when torch sees one
        (training), else its CPU; for `cpu`, the CPU even beside a GPU (where newscat serves)."""
        import torch

        if device != "cpu" and torch.cuda.is_available():
            capability = tuple(torch.cuda.get_device_capability())
            name = f"GPU {torch.cuda.get_device_name()} (compute capability {capability[0]}.{capability[1]})"
            return cls((capability[0], capability[1]), frozenset(), name)
        flags = frozenset(flag for flag, probe in _CPU_PROBES.items() if getattr(torch.cpu, probe, lambda: False)())
        return cls(None, flags, f"CPU with {', '.join(sorted(flags))}" if flags else "CPU without AVX512-BF16 or AMX")

    @property
    def native_bf16(self) -> bool:
        return bf16_is_native(self.capability, self.cpu_flags)


def bf16_is_native(capability: tuple[int, int] | None, cpu_flags: frozenset[str]) -> bool:
    """Native bf16: a GPU of compute capability >= 8.0 when there is one, else a CPU with AMX or AVX512-BF16."""
    if capability is not None:
        return tuple(capability) >= MIN_BF16_CAPABILITY
    return bool(cpu_flags & BF16_CPU_FLAGS)


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` runs bf16 math natively: by default the CPU, which serves the model (and scores the gate's
    paths) even where a GPU is present, so a GPU beside it decides nothing (an AVX512-BF16 / AMX CPU); `cuda` or
    `auto`: the GPU when there is one (Ampere or newer).

    Elsewhere bf16 is emulated and slower than fp32, so `auto` precision means fp32 there.
    """
    return Hardware.detect(device).native_bf16


def use_bf16(precision: str, hardware: Hardware | None = None) -> bool:
    """Whether to train under bf16 autocast: asked for, or `auto` on hardware with native bf16 math.

    An explicit `bf16` on hardware that emulates it is honoured, with one warning per process and hardware.
    """
    if precision not in ("auto", "bf16"):
        return False
    hardware = hardware or Hardware.detect()
    if precision == "bf16" and not hardware.native_bf16:
        _warn_emulated(hardware.name)
    return hardware.native_bf16 or precision == "bf16"


@functools.cache  # once: use_bf16 is asked at every trial and when its params are logged
def _warn_emulated(name: str) -> None:
    log.warning(
        "precision=bf16 on %s, which has no native bf16 math: bf16 is emulated there and training will be slower "
        "than fp32 (precision=auto chooses fp32 on this hardware)",
        name,
    )
