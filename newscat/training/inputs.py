"""What every trial of a study shares, built once: data, tokenizer, token ids, the base model, the search space."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newscat.config import Config
from newscat.data.load import NewsData, load_news
from newscat.data.tokenize import load_tokenizer, tokenize_news
from newscat.tracking.datasets import dataset_record
from newscat.training.model import BaseClassifier, load_base_classifier, resolve_model_path
from newscat.training.search_space import SearchSpace, search_space_from
from newscat.training.trainer import resolve_frozen_layers, resolve_pooling

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("newscat")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class StudyInputs:
    """Heavy objects built once per study and shared by every trial."""

    cfg: Config
    data: NewsData
    tokenizer: PreTrainedTokenizerBase
    tokenized: datasets.DatasetDict
    base: BaseClassifier
    space: SearchSpace
    records: Mapping[str, dict[str, Any]]  # per split: source, split name, MLflow dataset digest, rows

    @property
    def digests(self) -> dict[str, str]:
        return {split: record["digest"] for split, record in self.records.items()}


def prepare(cfg: Config) -> StudyInputs:
    """Load and validate the data first (fail before any model work), then model and tokens."""
    data = load_news(cfg.data, seed=cfg.seed)
    log.info(
        "data %s (%s): %d train / %d validation / %d test rows, classes %s",
        cfg.data.source,
        data.layout,
        len(data.train),
        len(data.validation),
        len(data.test),
        ", ".join(data.label_names),
    )
    space = search_space_from(cfg.tune.search_space, max_epochs=cfg.train.max_epochs)
    model_path = resolve_model_path(cfg.model.name)
    tokenizer = load_tokenizer(model_path)
    tokenized = tokenize_news(tokenizer, data, cfg.model.max_length)
    base = load_base_classifier(model_path, data.label_names)
    # `auto` becomes a count here, and a count the model cannot take fails now, before any training.
    frozen = resolve_frozen_layers(base.model, cfg.train.frozen_layers)
    pooling = resolve_pooling(base.model, cfg.train.pooling)  # auto becomes mean or cls; a bad choice fails now
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, frozen_layers=frozen, pooling=pooling))
    log.info("model %s: %d frozen layers, %s pooling, dropout %s", cfg.model.name, frozen, pooling, cfg.train.dropout)
    records = {split: dataset_record(getattr(data, split), cfg.data.source, split) for split in SPLITS}
    return StudyInputs(cfg, data, tokenizer, tokenized, base, space, records)
