"""Native bf16: decided from the GPU's compute capability or the CPU's flags, never from torch's "supported"."""

from __future__ import annotations

import logging

import pytest

from newscat.serving.precision import Hardware, _warn_emulated, bf16_is_native, native_bf16, use_bf16

VOLTA = Hardware((7, 0), frozenset(), "GPU Tesla V100 (compute capability 7.0)")
AMPERE = Hardware((8, 0), frozenset(), "GPU A100 (compute capability 8.0)")
OLD_CPU = Hardware(None, frozenset({"avx2"}), "CPU without AVX512-BF16 or AMX")


@pytest.mark.parametrize(
    ("capability", "cpu_flags", "native"),
    [
        ((7, 5), frozenset(), False),  # Turing: torch says bf16 is supported, but emulates it
        ((7, 0), frozenset({"amx_tile"}), False),  # the GPU decides when there is one
        ((8, 0), frozenset(), True),  # Ampere A100
        ((8, 6), frozenset(), True),
        ((9, 0), frozenset(), True),  # Hopper
        (None, frozenset({"avx512_bf16"}), True),
        (None, frozenset({"amx_tile", "avx512f"}), True),
        (None, frozenset({"avx512f", "avx2"}), False),
        (None, frozenset(), False),
    ],
)
def test_native_bf16_needs_ampere_or_a_bf16_cpu(
    capability: tuple[int, int] | None, cpu_flags: frozenset[str], native: bool
) -> None:
    assert bf16_is_native(capability, cpu_flags) is native


def test_this_machine_is_decided_by_the_same_rule() -> None:
    hardware = Hardware.detect()
    assert native_bf16() is bf16_is_native(hardware.capability, hardware.cpu_flags)
    assert hardware.cpu_flags <= {"amx_tile", "avx512_bf16"} and hardware.name


def test_auto_follows_the_hardware_and_fp32_never_uses_bf16(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="newscat"):
        assert use_bf16("auto", AMPERE) and not use_bf16("auto", VOLTA) and not use_bf16("auto", OLD_CPU)
        assert not use_bf16("fp32", AMPERE) and not use_bf16("fp32", VOLTA)
        assert use_bf16("bf16", AMPERE)
    assert not caplog.records  # nothing to warn about: bf16 only where it is native


def test_explicit_bf16_on_emulating_hardware_is_honoured_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    _warn_emulated.cache_clear()
    with caplog.at_level(logging.WARNING, logger="newscat"):
        assert all(use_bf16("bf16", VOLTA) for _ in range(3))  # every trial asks
        assert use_bf16("bf16", OLD_CPU)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2  # once per hardware, not once per trial
    assert "Tesla V100 (compute capability 7.0)" in messages[0] and "slower than fp32" in messages[0]
    assert "CPU without AVX512-BF16 or AMX" in messages[1]


def test_serving_decides_bf16_by_the_cpu_not_by_a_gpu_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The served model and the gate run on the CPU even where a GPU is present: the GPU's bf16 decides nothing."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))  # a Hopper GPU beside the CPU
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "H100")
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # an AVX2-only CPU
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert not native_bf16()  # serving: the CPU, which emulates bf16
    assert not Hardware.detect("cpu").native_bf16 and Hardware.detect("cpu").capability is None
    assert Hardware.detect().native_bf16 and native_bf16("cuda")  # training on the GPU: native
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))  # an old GPU, an AMX CPU
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_bf16() and not Hardware.detect().native_bf16


def test_torch_bf16_answers_a_text_alike_alone_and_inside_any_batch(tmp_path) -> None:
    """bf16 kernels round differently with the batch's shape: the engine takes one text per pass, so a text's
    answer is the same alone and among texts of other lengths (the release check and the server rely on it)."""
    import numpy as np

    from newscat.serving.backends import load_engine
    from newscat.serving.model import class_probabilities
    from newscat.serving.tokens import TokenEncoder
    from tests.helpers import fresh_classifier

    model_dir = fresh_classifier(tmp_path / "classifier", max_length=64)
    engine = load_engine(model_dir, "torch", "bf16", "cpu")
    assert engine.per_text
    words = [
        "Oil",
        "prices",
        "rose",
        "sharply",
        "on",
        "Tuesday",
        "after",
        "the",
        "cartel",
        "agreed",
        "to",
        "cut",
        "output",
        "again",
        "this",
        "winter",
    ]
    texts = [" ".join(words[: 2 + (7 * i) % len(words)]) for i in range(24)]  # 2 to 16 words, mixed order
    encoder = TokenEncoder(model_dir, 64)
    together, _ = class_probabilities(encoder, engine, texts)
    alone = np.vstack([class_probabilities(encoder, engine, [text])[0] for text in texts])
    assert np.array_equal(together, alone)
