"""The registered model as a container or a fresh environment would get it: from its own requirements, no torch.

No Docker daemon here: the Dockerfile that `mlflow models generate-dockerfile` writes is read, and the install it
runs is resolved by pip against the real index (a dry run); `mlflow models serve --env-manager virtualenv` builds
the environment from the model alone and answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import CLASSES, MODEL_NAME, serve_model, tool_env
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration
URI = f"models:/{MODEL_NAME}@champion"
TORCH_LIKE = ("torch", "transformers", "triton")  # and every nvidia-* CUDA library


def _names(report: dict) -> set[str]:
    return {item["metadata"]["name"].lower() for item in report["install"]}


def test_generated_dockerfile_installs_the_models_requirements_and_no_cuda(
    tracked_study: TrackedStudy, tmp_path: Path
) -> None:
    env = tool_env(tracked_study.tracking_uri)
    context = tmp_path / "docker"
    subprocess.run(
        ["mlflow", "models", "generate-dockerfile", "-m", URI, "-d", str(context)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    dockerfile = (context / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile and "_install_pyfunc_deps" in dockerfile
    model = context / "model_dir"  # the registered model, copied into the build context
    requirements = (model / "requirements.txt").read_text().split()
    assert any(r.startswith("onnxruntime==") for r in requirements)
    assert not [r for r in requirements if r.split("==")[0] in TORCH_LIKE]
    # What `pip install -r requirements.txt` in the image would install, resolved for Linux x86-64 / Python 3.11.
    report = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "-r",
            str(model / "requirements.txt"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    names = _names(json.loads(report.read_text()))
    assert {"onnxruntime", "tokenizers", "mlflow-skinny", "uvloop", "httptools"} <= names
    assert not [n for n in names if n in TORCH_LIKE or n.startswith("nvidia-")], sorted(names)


def test_served_from_an_environment_built_from_the_model_alone(tracked_study: TrackedStudy, tmp_path: Path) -> None:
    """`--env-manager virtualenv`: pyenv's Python, the model's requirements.txt, the model's own code; no torch."""
    env = tool_env(tracked_study.tracking_uri)
    env["MLFLOW_ENV_ROOT"] = str(tmp_path / "envs")
    log = tmp_path / "serve.log"
    with serve_model(URI, env, log, env_manager="virtualenv", ready_s=900) as url:
        response = requests.post(
            f"{url}/invocations", json={"inputs": ["Striker scores twice in cup final win"]}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] in CLASSES
        bad = requests.post(f"{url}/invocations", json={"inputs": [1]}, timeout=60)
        assert bad.status_code == 400 and "row 0 is the int" in bad.text
    (built,) = (tmp_path / "envs").glob("mlflow-*")
    python = next(built.rglob("bin/python"))
    probe = "import importlib.util as u; print([m for m in ('torch', 'transformers') if u.find_spec(m)])"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    assert "newscat model serves with onnx" in log.read_text()
