"""The frozen bottom of the encoder, computed once per text for the whole study.

With `frozen_layers` k, the embeddings and the bottom k encoder layers keep their pretrained weights in every trial
and the refit (each starts from the same base model), so their output for a given token sequence never changes.
`PrefixCache` keeps that output (layer k's input) per token sequence; while attached to a model, the model's
embeddings hand the cached states to the encoder and its bottom k layers pass them through untouched. So only the
first pass over a text runs the frozen layers (without gradients, in eval mode); every later epoch, trial and
validation pass starts at layer k. The model's weights and saved checkpoints are untouched: detached, it is the
ordinary full model.

One difference from training the frozen layers in place: their dropout is off (the cached states are their
eval-mode output). benchmarks/train_throughput.py measures both, speed and accuracy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from newscat.config import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

# States kept at most (fp32, hidden size x tokens per text: 10,000 AG News items at max_length 128 take about 0.8 GB
# with a 384-wide encoder). Texts beyond it are computed on every pass, as without a cache.
MAX_BYTES = 3 * 1024**3


class PrefixCache:
    """Layer `layers`'s input per token sequence, for one base model's frozen weights."""

    def __init__(self, layers: int, max_bytes: int = MAX_BYTES) -> None:
        if layers < 1:
            raise ValueError(f"a prefix cache needs at least one frozen layer, got {layers}")
        self.layers = layers
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._states: dict[bytes, torch.Tensor] = {}

    @contextlib.contextmanager
    def attached(self, model: PreTrainedModel) -> Iterator[None]:
        """While inside, `model` starts its forward pass at layer `layers` with states from this cache."""
        layers = list(encoder_layers(model))
        if self.layers >= len(layers):
            raise ValueError(f"frozen_layers={self.layers}: the encoder has {len(layers)} layers")
        embeddings, frozen = model.base_model.embeddings, layers[: self.layers]
        bottom = _Bottom(model, [embeddings, *frozen])
        embeddings.forward = lambda *args, **kwargs: self._states_for(bottom, *args, **kwargs)
        for layer in frozen:
            layer.forward = _pass_through
        try:
            yield
        finally:  # the instance attributes shadowed the class's forward: removing them restores it
            del embeddings.forward
            for layer in frozen:
                del layer.forward

    def _states_for(
        self,
        bottom: _Bottom,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The embeddings' replacement: layer `layers`'s input for each row, from the cache or computed now."""
        real = None if input_ids is None else (input_ids != bottom.pad_id).long()
        plain = position_ids is None and inputs_embeds is None and not kwargs.get("cache_length")
        # Keyed by the ids of right-padded rows (their states do not depend on the padding); any other call (left
        # padding, given positions or embeddings) runs the whole frozen bottom, as without a cache.
        if real is None or not plain or bool((real[:, 1:] > real[:, :-1]).any()):
            return bottom.run(input_ids, token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
        lengths = real.sum(dim=1).tolist()
        row_types = [None if token_type_ids is None else token_type_ids[row, :n] for row, n in enumerate(lengths)]
        keys = [_key(input_ids[row, :n], row_types[row]) for row, n in enumerate(lengths)]
        missing: dict[bytes, int] = {}  # a text not cached yet, once (the first row that has it)
        for row, key in enumerate(keys):
            if key not in self._states:
                missing.setdefault(key, row)
        found: dict[bytes, torch.Tensor] = {}
        if missing:
            self.misses += len(missing)
            rows = list(missing.values())
            width = max(lengths[row] for row in rows)
            types = None if token_type_ids is None else token_type_ids[rows, :width]
            computed = bottom.run(input_ids[rows, :width], types)
            for at, (key, row) in enumerate(missing.items()):
                found[key] = computed[at, : lengths[row]].detach().clone()
                self._keep(key, found[key])
        self.hits += len(keys) - len(missing)
        states = [found[key] if key in found else self._states[key] for key in keys]
        out = input_ids.new_zeros((*input_ids.shape, states[0].shape[-1]), dtype=states[0].dtype)
        for row, state in enumerate(states):
            out[row, : lengths[row]] = state
        return out

    def _keep(self, key: bytes, state: torch.Tensor) -> None:
        size = state.numel() * state.element_size()
        if self.bytes + size <= self.max_bytes:
            self._states[key] = state
            self.bytes += size

    def summary(self) -> str:
        """One line for the log: texts cached, memory, hits."""
        return (
            f"frozen-layer cache: {len(self._states)} texts, {self.bytes / 1024**2:.0f} MB, "
            f"{self.hits} hits / {self.misses} computed"
        )


class _Bottom:
    """The model's own embeddings and frozen layers (their class's forward: the instances' is replaced), run in
    eval mode without gradients."""

    def __init__(self, model: PreTrainedModel, modules: list[torch.nn.Module]) -> None:
        self.config = model.config
        self.modules = modules
        self.forwards = [type(module).forward.__get__(module) for module in modules]
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def run(self, input_ids: torch.Tensor | None, token_type_ids: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        training = [module.training for module in self.modules]
        for module in self.modules:
            module.eval()  # the cached states are the eval-mode output: the same on every pass
        try:
            with torch.no_grad():
                embeddings, *layers = self.forwards
                states = embeddings(input_ids=input_ids, token_type_ids=token_type_ids, **kwargs)
                mask = None if input_ids is None else (input_ids != self.pad_id).long()
                mask = create_bidirectional_mask(config=self.config, inputs_embeds=states, attention_mask=mask)
                for layer in layers:
                    states = layer(states, mask)
        finally:
            for module, was in zip(self.modules, training, strict=True):
                module.train(was)
        return states


def _pass_through(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden_states


def _key(ids: torch.Tensor, types: torch.Tensor | None) -> bytes:
    """A token sequence as bytes (token types too, where any is not 0)."""
    key = ids.cpu().numpy().tobytes()
    if types is not None and bool(types.any()):
        key += b"|" + types.cpu().numpy().tobytes()
    return key


def encoder_layers(model: PreTrainedModel) -> Any:
    """The encoder's layer list of a BERT-family model (BERT, RoBERTa, ELECTRA, MiniLM: `encoder.layer`)."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise ConfigError(
            f"frozen_layers needs a BERT-family encoder (encoder.layer); {type(model).__name__} has none: "
            "set train.frozen_layers to 0 in the config file"
        )
    return layers
