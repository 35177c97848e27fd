"""Size of a fresh serving environment built from a model's `requirements.txt` alone, against the requirements
every newscat model was logged with before the ONNX backend (mlflow, torch, transformers...). Prints JSON.

Each environment is a new venv (this interpreter's version) into which pip installs the requirements file and
nothing else, as `mlflow models serve --env-manager virtualenv` and the image of `mlflow models build-docker` do;
its size is the venv folder on disk, and an import check shows it can run the scoring server.

    python benchmarks/serving_env.py                        # the requirements a release with the ONNX default writes
    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/serving_env.py --model-uri models:/newscat@champion
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from provenance import provenance

# What `pip_requirements()` (now `newscat.export.pyfunc`) wrote into every model before the ONNX backend.
BEFORE = [f"mlflow=={version('mlflow')}", "torch==2.13.0"] + [
    f"{name}=={version(name).split('+')[0]}"
    for name in ("transformers", "tokenizers", "safetensors", "pandas", "numpy")
]
SERVER_IMPORTS = "import mlflow.pyfunc.scoring_server, pandas, numpy, tokenizers"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build(requirements: list[str], target: Path) -> dict:
    """A fresh venv with exactly `requirements` installed; its size, install time and what it holds."""
    (target.parent / f"{target.name}.txt").write_text("\n".join(requirements) + "\n")
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    python = str(target / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-r", str(target.parent / f"{target.name}.txt")], check=True
    )
    seconds = time.perf_counter() - began
    probe = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'onnxruntime') if u.find_spec(m)])"
    holds = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    serves = subprocess.run([python, "-c", SERVER_IMPORTS], capture_output=True).returncode == 0
    torch_build = subprocess.run(
        [python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "requirements": requirements,
        "size_mb": round(folder_bytes(target) / 1e6, 1),
        "install_s": round(seconds, 1),
        "heavy_packages": holds,
        "torch_build": torch_build or None,
        "scoring_server_imports": serves,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", help="read this model's requirements.txt (default: newscat's ONNX release's)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="newscat-env-"))
    if args.model_uri:
        import mlflow

        found = mlflow.artifacts.download_artifacts(f"{args.model_uri}/requirements.txt", dst_path=str(work))
        model = [line for line in Path(found).read_text().splitlines() if line.strip()]
    else:
        from newscat.export.pyfunc import pip_requirements

        model = pip_requirements("onnx")
    results = {"before": build(BEFORE, work / "before"), "model": build(model, work / "model")}
    report = {
        "benchmark": "serving_env",
        **provenance(),
        "model_uri": args.model_uri or "newscat.export.pyfunc.pip_requirements('onnx')",
        "environments": results,
        "size_ratio_model_over_before": round(results["model"]["size_mb"] / results["before"]["size_mb"], 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
