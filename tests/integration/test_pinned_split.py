"""The test split is pinned, end to end: a tiny version trained on one CSV file cut with test_fraction 0.3 (not the
default 0.2) records it; `newscat evaluate` and the gate recompute the same split; once the file changes, they and a
retrain stop with what differs; a retrain's written training data holds no row of the pinned test split."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from newscat.data.load import load_news, text_key
from newscat.monitoring.retrain import LiveRows, write_retrain_data
from newscat.registry.evaluations import TestSplitChanged
from newscat.registry.promotion import promote_with_gate
from newscat.registry.tags import VersionTags
from newscat.tracking.datasets import dataset_record
from tests.helpers import tool_env, write_news_file

pytestmark = pytest.mark.integration
MODEL = "newscat-pinned"
SPACE = "learning_rate: 5.0e-4\nbatch_size: 16\nepochs: 1\nwarmup_ratio: 0.0\nweight_decay: 0.0\n"


@dataclass(frozen=True)
class Pinned:
    root: Path
    source: Path
    tracking_uri: str

    def newscat(self, *args: str) -> subprocess.CompletedProcess:
        env = tool_env(self.tracking_uri)
        return subprocess.run(["newscat", *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pinned]:
    """Version 1 of MODEL: one trial, one epoch, no refit, torch fp32 only, on one file cut with test_fraction 0.3."""
    root = tmp_path_factory.mktemp("pinned")
    project = Pinned(root, write_news_file(root / "news.csv"), f"sqlite:///{root}/mlflow.db")
    (root / "config.yaml").write_text(
        f"train:\n  work_dir: {root / 'work'}\n  evals_per_epoch: 1\ndata:\n  test_fraction: 0.3\n"
    )
    (root / "space.yaml").write_text(SPACE)
    tuned = project.newscat(
        *("tune", "--data", str(project.source), "--text-columns", "headline", "--label-column", "topic"),
        *("--config", str(root / "config.yaml"), "--search-space", str(root / "space.yaml")),
        *("--storage", f"sqlite:///{root}/optuna.db", "--study-name", "pinned", "--registered-model", MODEL),
        *("--n-trials", "1", "--max-epochs", "1", "--max-length", "16", "--no-refit", "--lexical", "off"),
        *("--serving-paths", "none", "--max-train-samples", "0", "--max-eval-samples", "0", "--timeout", "0"),
    )
    assert tuned.returncode == 0, (tuned.stdout + tuned.stderr)[-6000:]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(project.tracking_uri)
    try:
        yield project
    finally:
        mlflow.set_tracking_uri(previous)


def _tags() -> VersionTags:
    return VersionTags.from_tags(MlflowClient().get_model_version(MODEL, "1").tags)


def _live(*texts: str) -> LiveRows:
    frame = pd.DataFrame({"text": list(texts), "label": ["World"] * len(texts), "timestamp_ms": range(len(texts))})
    return LiveRows(frame.iloc[:-1].reset_index(drop=True), frame.iloc[-1:].reset_index(drop=True), window=None)  # type: ignore[arg-type]


def test_the_pinned_split_is_recomputed_then_a_changed_file_stops_every_command(pinned: Pinned) -> None:
    tags = _tags()
    written = MlflowClient().get_model_version(MODEL, "1").tags
    assert (written["data.test_fraction"], written["data.test_rows"]) == ("0.3", "12")  # 40 rows, 0.3 of them
    test = load_news(tags.data_config(), seed=42).test
    assert dataset_record(test, str(pinned.source), "test")["sha256"] == tags.test_sha256

    evaluated = pinned.newscat("evaluate", f"models:/{MODEL}/1")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    run_id = json.loads(evaluated.stdout)["run_id"]
    data = json.loads(Path(MlflowClient().download_artifacts(run_id, "evaluation/data.json")).read_text())
    assert (data["digest"], data["rows"]) == (tags.test_digest, 12)
    assert "test split verified" in evaluated.stderr

    gate = promote_with_gate(MODEL, version="1")  # no champion yet: it passes, on the pinned split
    assert gate.moved and gate.decision.data["digest"] == tags.test_digest

    # The live rows repeat a test headline (in capitals): the retrain's training data must not hold it.
    folder = pinned.root / "retrain"
    used = write_retrain_data(
        f"{MODEL}@champion", tags, _live(test["text"].iloc[0].upper(), "live news", "new"), folder, seed=42
    )
    assert used.train["text"].tolist() == ["live news"]
    train = pd.read_csv(folder / "train" / "train.csv")
    assert not set(train["text"].map(text_key)) & set(test["text"].map(text_key))

    write_news_file(pinned.source, n_per_class=11)  # the file changed: 44 rows, another test split
    changed = pinned.newscat("evaluate", f"models:/{MODEL}/1")
    assert changed.returncode == 1
    assert f"models:/{MODEL}/1: its data no longer gives the test split it was tested on" in changed.stderr
    assert "recomputed now: 13 rows" in changed.stderr and "pass --data" in changed.stderr
    with pytest.raises(TestSplitChanged, match=f"{MODEL} version 1: its data no longer gives"):
        promote_with_gate(MODEL, version="1", to_alias="production")
    with pytest.raises(TestSplitChanged, match="retrain from a version trained on the data as it is now"):
        write_retrain_data(f"{MODEL}@champion", tags, _live("live news", "new"), pinned.root / "again", seed=42)

    # Other data on purpose is scored, and not against the pin.
    other = pinned.newscat("evaluate", f"models:/{MODEL}/1", "--data", str(pinned.source))
    assert other.returncode == 1  # the same file is the version's own data: still pinned
    renamed = write_news_file(pinned.root / "other.csv", seed=5)
    other = pinned.newscat("evaluate", f"models:/{MODEL}/1", "--data", str(renamed))
    assert other.returncode == 0, other.stderr[-3000:]
    assert "its pinned test split is not compared" in other.stderr
