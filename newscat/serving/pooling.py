"""How a classifier turns its token states into one vector per text: BERT's [CLS] state (`cls`), or the mean of the
text's token states (`mean`, how sentence encoders such as all-MiniLM-L6-v2 were pre-trained).

`mean` keeps the model a stock transformers classifier (same weights, same files): two forward pre-hooks hand the
encoder's pooler the masked mean instead of the [CLS] state, and the checkpoint's config.json records the choice
(`newscat_pooling`), so every loader (training, ONNX export, the torch serving engine) applies it again. Padding
never enters the mean, so a text's answer does not depend on its batch-mates.
"""

from __future__ import annotations

import threading
from typing import Any

from newscat.names import Pooling

CONFIG_KEY = "newscat_pooling"
_HOOKED = "_newscat_mean_pooling"  # set on the base model once its hooks are in place
# The masks of the forwards under way, per thread (innermost last): a mask kept on the module instead could reach
# the pooler of another thread's forward, and a text's answer would depend on another client's batch.
_masks = threading.local()


class PoolingError(ValueError):
    """The model cannot pool the way asked."""


def apply_pooling(model: Any, pooling: str) -> None:
    """Make `model` (a transformers sequence classifier) pool its token states by `pooling`; recorded in its config.
    Applying the same pooling twice changes nothing; a model cannot go back from `mean` to `cls`."""
    problem = pooling_problem(model, pooling)
    if problem:
        raise PoolingError(problem)
    base = model.base_model
    if pooling == "cls":
        return
    if not getattr(base, _HOOKED, False):
        base.register_forward_pre_hook(_keep_mask, with_kwargs=True)
        base.register_forward_hook(_drop_mask, always_call=True)  # also when the forward fails
        base.pooler.register_forward_pre_hook(_mean_of_tokens)
        setattr(base, _HOOKED, True)
    setattr(model.config, CONFIG_KEY, pooling)


def pooling_problem(model: Any, pooling: str) -> str | None:
    """Why `model` cannot pool by `pooling` (None: it can)."""
    if pooling not in tuple(Pooling):
        return f"pooling must be one of {', '.join(Pooling)}, got {pooling!r}"
    made_mean = getattr(model.base_model, _HOOKED, False) or getattr(model.config, CONFIG_KEY, "cls") != "cls"
    if pooling == "cls" and made_mean:
        return "this model was made to pool by mean; it cannot pool by cls"
    if pooling == "mean" and not has_pooler(model):
        return (
            f"pooling=mean needs an encoder with a pooler (the BERT family); {type(model).__name__} has none: "
            "set train.pooling to cls in the config file"
        )
    return None


def has_pooler(model: Any) -> bool:
    """Whether the encoder feeds a pooler (BERT does; RoBERTa's and DistilBERT's classifiers read the states)."""
    return getattr(model.base_model, "pooler", None) is not None


def apply_saved_pooling(model: Any) -> None:
    """The pooling the checkpoint was trained with (its config.json), `cls` when it says nothing."""
    apply_pooling(model, getattr(model.config, CONFIG_KEY, "cls"))


def _stack() -> list:
    """This thread's masks of the base-model forwards under way."""
    if not hasattr(_masks, "stack"):
        _masks.stack = []
    return _masks.stack


def _keep_mask(module: Any, args: tuple, kwargs: dict) -> None:
    """The base model's pre-hook: its pooler runs inside its forward, on this thread, and sees only the token
    states."""
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1:
        mask = args[1]
    _stack().append(mask)


def _drop_mask(module: Any, args: tuple, output: Any) -> None:
    """The base model's post-hook: its forward is over (or failed), its mask is no longer needed."""
    stack = _stack()
    if stack:
        stack.pop()


def _mean_of_tokens(module: Any, args: tuple) -> tuple:
    """The pooler's pre-hook: its input becomes one position holding the mean of the text's unpadded states (the
    pooler reads position 0)."""
    (hidden,) = args
    stack = _stack()
    mask = stack[-1] if stack else None
    if mask is None:
        return (hidden.mean(dim=1, keepdim=True),)
    weights = mask[:, : hidden.shape[1], None].to(hidden.dtype)
    mean = (hidden * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1)
    return (mean,)
