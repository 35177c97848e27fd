"""Shared fixtures: tiny, learnable news data written on the fly (nothing from ../shared is copied)."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

# Nothing in the suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

CLASSES = ("World", "Sports", "Business", "Sci/Tech")
_TEMPLATES = {
    "World": [
        "Prime minister of {p} visits {c} for peace talks",
        "Troops withdraw from {c} after ceasefire in {p}",
        "Election results in {p} spark protests in {c}",
    ],
    "Sports": [
        "{t} beat rivals in the championship final",
        "Striker scores twice as {t} win the cup",
        "Coach of {t} praises defence after league victory",
    ],
    "Business": [
        "Shares of {f} rise after quarterly earnings",
        "{f} profit falls as oil prices climb",
        "Investors sell {f} stock on merger worries",
    ],
    "Sci/Tech": [
        "{f} releases new software for {g} users",
        "Researchers unveil faster {g} chip",
        "Space agency launches {g} satellite to study Mars",
    ],
}
_FILL = {
    "p": ["France", "Iraq", "Kenya", "Chile", "Japan"],
    "c": ["Baghdad", "Paris", "Nairobi", "Lima", "Seoul"],
    "t": ["Yankees", "Arsenal", "Lakers", "Red Sox", "Chelsea"],
    "f": ["Oracle", "Boeing", "Exxon", "Intel", "Nike"],
    "g": ["mobile", "laptop", "quantum", "wireless", "robot"],
}


def make_news(n_per_class: int, seed: int) -> list[tuple[int, str, str]]:
    """(label 1-4, title, description) rows whose wording gives the topic away."""
    rng = random.Random(seed)
    rows = []
    for label, name in enumerate(CLASSES, start=1):
        for _ in range(n_per_class):
            template = rng.choice(_TEMPLATES[name])
            title = template.format(**{k: rng.choice(v) for k, v in _FILL.items()})
            rows.append((label, title, f"{title}, reports said on {rng.choice(['Monday', 'Friday'])}."))
    rng.shuffle(rows)
    return rows


def write_ag_news_dir(path: Path, n_train: int = 24, n_test: int = 6) -> Path:
    """A directory in the original AG News CSV layout: headerless, quoted, labels 1-4."""
    path.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.csv", n_train, 1), ("test.csv", n_test, 2)):
        with (path / name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(make_news(n, seed))
    (path / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def ag_news_dir(tmp_path: Path) -> Path:
    return write_ag_news_dir(tmp_path / "ag_news")
