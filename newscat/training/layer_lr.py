"""Layer-wise learning-rate decay: the head trains at the trial's learning rate, each encoder layer below it at
`decay` times the rate of the layer above (the embeddings lowest). The lower layers of a pre-trained encoder hold
the most general features; smaller steps there keep more of them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from newscat.config import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def parameter_depth(name: str, n_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, n_layers + 1 for everything above (pooler, classifier)."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if ".embeddings." in f".{name}" else n_layers + 1


def layer_lr_groups(
    model: PreTrainedModel, learning_rate: float, weight_decay: float, decay: float, decayed: set[str]
) -> list[dict[str, Any]]:
    """Optimizer parameter groups of the trainable weights: one per (learning rate, weight decay) pair. `decayed`
    names the weights that take weight decay (the Trainer's choice: not biases or layer norms)."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None:
        raise ConfigError(
            f"layer_lr_decay needs a BERT-family encoder (encoder.layer); {type(model).__name__} has none: "
            "set train.layer_lr_decay to 1 in the config file"
        )
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, weight in model.named_parameters():
        if weight.requires_grad:
            lr = learning_rate * decay ** (len(layers) + 1 - parameter_depth(name, len(layers)))
            groups.setdefault((lr, weight_decay if name in decayed else 0.0), []).append(weight)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


def layer_lr_optimizer(model: PreTrainedModel, args: Any, decay: float) -> Any:
    """The optimizer the Trainer would build from `args` (fused AdamW by default), with layer-wise rates; None when
    `decay` is 1 (the Trainer builds its own)."""
    from transformers import Trainer

    if decay >= 1.0:
        return None
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    decayed = set(Trainer.get_decay_parameter_names(None, model))  # a method that reads no Trainer state
    return optimizer_cls(layer_lr_groups(model, args.learning_rate, args.weight_decay, decay, decayed), **kwargs)
