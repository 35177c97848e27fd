"""Serving speed: newscat's pyfunc vs the same weights in MLflow's transformers flavor, both behind
`mlflow models serve`, plus the pyfunc's in-process latency for the same headline. Prints JSON.

Each server runs alone (one after the other) on 127.0.0.1; clients are threads posting {"inputs": [...]} for
a bounded time. Texts/s counts headlines scored; latencies are per request.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/serving.py --model-uri models:/newscat@champion
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests


def headlines(path: Path, n: int) -> list[str]:
    """Titles of the AG News test split (the original CSV layout: label, title, description)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [row[1] for _, row in zip(range(n), csv.reader(handle), strict=False)]


def flavor_copy(classifier_dir: Path, target: Path) -> Path:
    """The same weights and tokenizer saved with mlflow.transformers (task text-classification)."""
    import mlflow
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(classifier_dir), tokenizer=str(classifier_dir))
    # pip_requirements given: the flavor's default list asks for torchvision, absent here.
    mlflow.transformers.save_model(classify, str(target), task="text-classification", pip_requirements=["mlflow"])
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_path: Path, log: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_path), "--env-manager", "local"]
    command += ["-h", "127.0.0.1"]
    # The server starts uvicorn by name: this interpreter's bin directory must be on PATH.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(extra_env or {})
    process = subprocess.Popen([*command, "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not start within 180 s")


def load(url: str, texts: list[str], *, clients: int, batch: int, seconds: float) -> dict[str, float]:
    """`clients` threads post batches of `batch` headlines until `seconds` pass (bounded by count too)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        nonlocal errors
        session = requests.Session()
        for i in range(100_000):
            if time.monotonic() >= stop_at:
                return
            start = offset + i * batch
            body = {"inputs": [texts[(start + j) % len(texts)] for j in range(batch)]}
            began = time.perf_counter()
            try:
                ok = session.post(f"{url}/invocations", json=body, timeout=60).status_code == 200
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                errors += not ok

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k * 997,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": errors,
        "texts_per_s": round(len(ordered) * batch / wall, 1),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def in_process_p50(model_path: Path, text: str, repeats: int = 200) -> float:
    """Median latency of the loaded pyfunc predicting one headline in this process."""
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(model_path))
    frame = pd.DataFrame({"text": [text]})
    for _ in range(20):
        model.predict(frame)
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        model.predict(frame)
        timings.append(time.perf_counter() - began)
    return round(1000 * statistics.median(timings), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/newscat@champion", help="newscat pyfunc model URI")
    parser.add_argument("--data", default="../shared/data/ag_news/test.csv", help="AG News CSV for headlines")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load level")
    args = parser.parse_args()

    import mlflow

    texts = headlines(Path(args.data), 500)
    work = Path(tempfile.mkdtemp(prefix="newscat-serving-"))
    pyfunc_dir = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=str(work / "pyfunc")))
    flavor_dir = flavor_copy(pyfunc_dir / "artifacts" / "classifier", work / "flavor")
    report: dict = {
        "benchmark": "serving",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        "model_uri": args.model_uri,
        "seconds_per_level": args.seconds,
        "in_process_single_headline_p50_ms": in_process_p50(pyfunc_dir, texts[0]),
        "servers": {},
    }
    levels = [(1, 1), (8, 1), (1, 16), (8, 16)]
    for name, path in (("newscat_pyfunc", pyfunc_dir), ("transformers_flavor", flavor_dir)):
        process, url = start_server(path, work / f"{name}.log")
        try:
            load(url, texts, clients=2, batch=1, seconds=2)  # warm-up
            results = {}
            for clients, batch in levels:
                results[f"clients={clients},batch={batch}"] = load(
                    url, texts, clients=clients, batch=batch, seconds=args.seconds
                )
                print(
                    json.dumps(
                        {name: {f"clients={clients},batch={batch}": results[f"clients={clients},batch={batch}"]}}
                    ),
                    flush=True,
                )
            report["servers"][name] = results
        finally:
            process.terminate()
            process.wait(timeout=30)
    ours, theirs = report["servers"]["newscat_pyfunc"], report["servers"]["transformers_flavor"]
    report["ratios"] = {
        "texts_per_s_vs_flavor": {k: round(ours[k]["texts_per_s"] / theirs[k]["texts_per_s"], 2) for k in ours},
        "served_p50_over_in_process_p50_single_headline": round(
            ours["clients=1,batch=1"]["p50_ms"] / report["in_process_single_headline_p50_ms"], 2
        ),
        "errors": sum(r["errors"] for server in report["servers"].values() for r in server.values()),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
