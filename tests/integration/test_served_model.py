"""The logged model is self-contained: it ships only serving code and predicts where training code cannot load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.helpers import CLASSES, MODEL_NAME, ROOT, tool_env
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration

# Run in a fresh interpreter: every module that serving must not need raises ImportError (torch and transformers
# too: the ONNX path needs neither), then the model is loaded from its own folder and asked for a topic. MLflow
# itself imports click when it loads, so click is dropped from sys.modules after that and blocked from then on: the
# model's own code cannot import it.
FRESH = """
import importlib.abc, json, sys
import mlflow, mlflow.pyfunc, pandas as pd

BLOCKED = ("optuna", "click", "pyspark", "newscat.training", "newscat.tracking", "newscat.cli",
           "newscat.batch", "newscat.evaluation", "newscat.registry", "newscat.config", "newscat.export",
           "torch", "transformers")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked for this test: {name}")
        return None

for name in [m for m in sys.modules if m == "click" or m.startswith("click.")]:
    del sys.modules[name]
sys.meta_path.insert(0, Block())
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict(pd.DataFrame({"text": ["Striker scores twice as Arsenal win the cup"]}))
import newscat
engine = str(model.unwrap_python_model().choice)
print(json.dumps({"label": answer["label"][0], "newscat": newscat.__file__, "engine": engine,
                  "loaded": sorted(m for m in sys.modules if m.startswith("newscat"))}))
"""


def test_a_logged_model_predicts_without_training_tracking_or_cli_code(
    tracked_study: TrackedStudy, tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/1", dst_path=str(tmp_path / "model")))
    shipped = sorted(str(p.relative_to(local / "code")) for p in (local / "code").rglob("*.py"))
    serving = sorted(f"newscat/serving/{p.name}" for p in (ROOT / "newscat" / "serving").glob("*.py"))
    own = ["newscat/__init__.py", "newscat/data/__init__.py", "newscat/data/text.py", "newscat/faces.py"]
    assert shipped == sorted([*own, "newscat/names.py", *serving])
    result = subprocess.run(
        [sys.executable, "-c", FRESH, str(local)],
        env={**tool_env(tracked_study.tracking_uri), "NEWSCAT_BACKEND": "onnx"},
        cwd=tmp_path,  # not the repository: `newscat` must come from the model's own code folder
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["label"] in CLASSES and answer["engine"].startswith("onnx ")
    assert Path(answer["newscat"]).resolve().is_relative_to(local.resolve())
    assert not [m for m in answer["loaded"] if m.startswith(("newscat.training", "newscat.tracking"))]
