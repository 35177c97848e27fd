"""The engines behind the served model: torch (fp32, bf16 weights, dynamic int8; CPU or CUDA) and ONNX Runtime
(fp32 or int8 graphs exported at logging time). Each maps padded ids and masks to logits.

Each imports its runtime only when chosen, so a serving environment without torch loads the ONNX engine.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from newscat.serving.pooling import apply_saved_pooling

ONNX_DIR = "onnx"
ONNX_FILES = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
THREADS_ENV = "NEWSCAT_THREADS"  # compute threads of the engine (default: the CPU cores this process may use)


class Engine(Protocol):
    """Logits (float32, one row per text) from padded `input_ids` and `attention_mask`.

    `per_text` engines answer a text differently inside different batches (dynamic int8 computes activation scales
    per forward pass; bf16 matrix kernels round differently with the batch's shape), so they are only ever given
    one text at a time.
    """

    per_text: bool

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


def compute_threads() -> int:
    """`NEWSCAT_THREADS`, else the CPUs this process may run on."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{THREADS_ENV}={raw!r}: give a whole number >= 1")
        return int(raw)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class TorchEngine:
    """The safetensors weights under torch. bf16 converts the weights once at load (autocast under inference_mode
    would convert every weight again on every forward); int8 is torch's dynamic quantization of the Linear layers."""

    def __init__(self, model_dir: Path, precision: str, device: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        self._torch = torch
        self.device = torch.device(device)
        # bf16 too: one text alone and inside a length-sorted batch differed by up to 1.3e-4 in a probability on an
        # AMX CPU (81 of 200 AG News texts beyond 1e-5, 1 label changed with an untrained head; fp32: 1.1e-8).
        self.per_text = precision in ("int8", "bf16")
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=False
        ).eval()
        apply_saved_pooling(model)
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            with warnings.catch_warnings():  # torch marks the quantized-tensor API deprecated; it still works
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model.to(self.device)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
            ).logits
        return logits.float().cpu().numpy()


class OnnxEngine:
    """An ONNX graph under ONNX Runtime's CPU provider; idle compute threads sleep instead of spinning."""

    def __init__(self, model_dir: Path, precision: str) -> None:
        import onnxruntime as ort

        self.per_text = precision == "int8"  # dynamic int8: activation scales per forward pass
        options = ort.SessionOptions()
        options.intra_op_num_threads = compute_threads()
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores the tokenizer and the HTTP server need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = model_dir / ONNX_DIR / ONNX_FILES[precision]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})
        return logits.astype(np.float32, copy=False)


def load_engine(model_dir: Path, backend: str, precision: str, device: str) -> Engine:
    """The engine for a resolved choice (see `newscat.serving.choice`)."""
    if backend == "onnx":
        return OnnxEngine(model_dir, precision)
    return TorchEngine(model_dir, precision, device)
