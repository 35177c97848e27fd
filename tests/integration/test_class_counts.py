"""Two and twenty classes end to end: a real `mlflow run` (tune, lexical companion, register), `newscat promote` and
a real `mlflow models serve` whose answers carry every class and sum to 1.

The behavioural checks on such label sets (every AG News case skipped, with a note) are unit-tested with a stand-in
model (tests/unit/evaluation/test_class_counts.py): one more CLI process here would cost about 20 s per class count.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from newscat.evaluation.metrics import metric_key
from tests.helpers import KEYWORD_CLASSES, ROOT, TinyProject, serve_model, write_keyword_data

pytestmark = pytest.mark.integration

# One trial of a known-good recipe, one epoch: the data is learnt from its keywords, by the companion at least.
SPACE = """\
learning_rate: 5.0e-4
batch_size: 16
epochs: 1
warmup_ratio: 0.0
weight_decay: 0.0
"""
ROWS = {2: (40, 8), 20: (24, 4)}  # train, test rows per class
MODEL = "newscat-classes"


@dataclass(frozen=True)
class Released:
    """One class count's project after tune + register + promote, with its champion served."""

    n_classes: int
    names: tuple[str, ...]
    project: TinyProject
    client: MlflowClient
    url: str
    promote_output: str


def _newscat(project: TinyProject, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["newscat", *args], cwd=project.root, env=project.env(), capture_output=True, text=True, timeout=300
    )


def _tune(project: TinyProject) -> None:
    params = {
        "data": project.data,
        "config": project.config,
        "search_space": project.space,
        "storage": project.storage,
        "study_name": "classes",
        "registered_model": MODEL,
        "n_trials": 1,
        "max_epochs": 1,
        "max_train_samples": 0,
        "max_eval_samples": 0,
        "max_length": 16,
        "serving_paths": "none",  # torch fp32 only: ONNX export knows no class count, and costs a minute here
    }
    command = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "classes"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    result = subprocess.run(command, cwd=project.root, env=project.env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]


@pytest.fixture(scope="module", params=[2, 20], ids=["2-classes", "20-classes"])
def released(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    n_classes = request.param
    project = TinyProject(tmp_path_factory.mktemp(f"classes-{n_classes}"))
    names = write_keyword_data(project.data, n_classes, *ROWS[n_classes])
    config = f"train:\n  work_dir: {project.root / 'work'}\n  evals_per_epoch: 1\ndata:\n  validation_fraction: 0.25\n"
    project.config.write_text(config)
    project.space.write_text(SPACE)
    _tune(project)
    promoted = _newscat(project, "promote", MODEL, "--from", "challenger", "--to", "champion")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    mlflow.set_tracking_uri(project.tracking_uri)
    client = MlflowClient(tracking_uri=project.tracking_uri)
    with serve_model(f"models:/{MODEL}@champion", project.env(), project.root / "serve.log") as url:
        yield Released(n_classes, names, project, client, url, promoted.stdout)


def test_the_release_scores_every_class_and_keeps_a_working_companion(released: Released) -> None:
    version = released.client.get_model_version_by_alias(MODEL, "champion")
    model = released.client.get_logged_model(version.source.removeprefix("models:/"))
    metrics = {m.key: m.value for m in model.metrics}
    assert {f"test_f1_{metric_key(name)}" for name in released.names} <= set(metrics)
    assert metrics["test_accuracy"] == pytest.approx(float(version.tags["test_accuracy"]), abs=5e-5)
    # The companion alone reads the keywords; a binary one used to answer 1.0 for every class (accuracy 0.5).
    assert metrics["eval_lexical_accuracy"] >= 0.9 and metrics["lexical_accuracy"] >= 0.9
    assert metrics["lexical_weight"] > 0.0  # kept: the served answers below are the mix
    assert f"text classifier ({released.n_classes} classes)" in version.description
    assert "AG News" not in version.description


def test_promote_made_the_first_champion(released: Released) -> None:
    assert "PASS: no champion yet" in released.promote_output
    assert f"{MODEL}@champion -> version 1" in released.promote_output


def test_served_answers_carry_every_class_and_sum_to_one(released: Released) -> None:
    classes = KEYWORD_CLASSES[released.n_classes]
    texts = [f"{words[0]} people said {words[1]}" for words in classes.values()]
    response = requests.post(
        f"{released.url}/invocations",
        data=json.dumps({"inputs": texts}),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for prediction in predictions:
        probabilities = prediction["probabilities"]
        assert list(probabilities) == sorted(released.names)  # every class, in the model's (sorted) order
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        assert prediction["score"] == pytest.approx(probabilities[prediction["label"]])
    right = sum(p["label"] == name for p, name in zip(predictions, classes, strict=True))
    assert right >= 0.9 * len(texts)  # the mix still reads the keywords
