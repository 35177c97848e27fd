"""ONNX graphs of a fine-tuned classifier: exported with torch.onnx, fused by ONNX Runtime's transformer optimizer,
and quantized to int8 (per-channel weights, full-range activations)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from newscat.serving.backends import ONNX_DIR, ONNX_FILES
from newscat.serving.pooling import apply_saved_pooling

log = logging.getLogger("newscat")
OPSET = 17
# Nodes kept in fp32 by the int8 graph. The pooler and classifier act on one vector per text: quantizing them saves
# nothing measurable, and their rounding moves every probability. The feed-forward output projections read GELU
# outputs, the widest activation range in the layer, which one 8-bit scale per batch resolves worst: measured on a
# fine-tuned model (AMD EPYC, 7,600 AG News test items), quantizing them too gave 99.34% label agreement with fp32,
# keeping them in fp32 99.70%, at 367 instead of 465 texts/s (fp32 graph: 253).
KEEP_FP32 = ("/pooler/", "/classifier/", "/output/dense/")
NOT_KEPT = ("/attention/",)  # the attention output projection (also named output/dense) is quantized


@dataclass(frozen=True)
class OnnxExport:
    """The graphs written under the classifier folder, and the fused operators found in the optimized one."""

    files: dict[str, str]  # precision -> path relative to the classifier folder
    fused: dict[str, int]


def export_onnx(model_dir: Path) -> OnnxExport:
    """Write `onnx/model.onnx` (optimized fp32) and `onnx/model-int8.onnx` next to the safetensors weights."""
    target = model_dir / ONNX_DIR
    target.mkdir(exist_ok=True)
    raw = target / "raw.onnx"
    config = _export_raw(model_dir, raw)
    with onnxruntime_at_debug():
        fused = _optimize(raw, target / ONNX_FILES["fp32"], config)
        raw.unlink()
        _quantize(target / ONNX_FILES["fp32"], target / ONNX_FILES["int8"])
    log.info("ONNX export: fused %s", ", ".join(f"{k} x{v}" for k, v in fused.items()) or "nothing")
    return OnnxExport({p: f"{ONNX_DIR}/{name}" for p, name in ONNX_FILES.items()}, fused)


class _OnnxRuntimeAtDebug(logging.Filter):
    """ONNX Runtime's optimizer and quantizer report every tensor they skip at INFO and WARNING, partly on the root
    logger: their lines are demoted to DEBUG (shown with `newscat -v`), so that the job's output is newscat's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.name and "onnxruntime" not in record.pathname:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


@contextmanager
def onnxruntime_at_debug() -> Iterator[None]:
    """Within the block, ONNX Runtime's log records are DEBUG records: on the root logger (the quantizer logs there
    directly) and on its handlers (which its own loggers' records reach by propagation)."""
    demote = _OnnxRuntimeAtDebug()
    root = logging.getLogger()
    targets = [root, *root.handlers]
    for target in targets:
        target.addFilter(demote)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(demote)


def _export_raw(model_dir: Path, path: Path) -> object:
    """torch.onnx's TorchScript exporter on the eager attention (the form ONNX Runtime's optimizer fuses)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, use_safetensors=True, trust_remote_code=False, attn_implementation="eager"
    ).eval()
    apply_saved_pooling(model)  # a mean-pooling model's hooks are traced into the graph

    class LogitsOnly(torch.nn.Module):  # the graph takes ids and mask and returns the logits alone
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    dynamic = {"batch": 0, "tokens": 1}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            LogitsOnly(),
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {v: k for k, v in dynamic.items()},
                "attention_mask": {v: k for k, v in dynamic.items()},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    return model.config


def _optimize(raw: Path, path: Path, config: object) -> dict[str, int]:
    """ONNX Runtime's BERT optimizer (attention, embedding and layer-norm fusion); returns the fused operators."""
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(raw),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,  # portable fusions only: the graph must run on any CPU
    )
    optimized.save_model_to_file(str(path))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def _quantize(source: Path, path: Path) -> None:
    """Dynamic int8: weights per output channel, activations over the full 8-bit range (reduce_range would drop a
    bit of activation precision, which CPUs with VNNI do not need)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source))
    keep = [
        node.name
        for node in graph.graph.node
        if any(part in node.name for part in KEEP_FP32) and not any(part in node.name for part in NOT_KEPT)
    ]
    keep += [f"{name}_MatMul" for name in keep]  # the quantizer first splits each Gemm into MatMul + Add
    quantize_dynamic(
        str(source),
        str(path),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused contrib ops carry no inferred type
    )
