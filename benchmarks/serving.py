"""Serving speed on real news items (title + description, as users send them): newscat's pyfunc on its default
path (the accuracy gate's choice), the same model forced to torch fp32, and the same weights in MLflow's
transformers flavor, each behind `mlflow models serve`. Titles alone are measured beside. Prints JSON.

Each server runs alone (one after the other) on 127.0.0.1; clients are threads posting {"inputs": [...]} for
a bounded time, each level repeated `--rounds` times (medians reported). Texts/s counts items scored; latencies are
per request; memory is the server's resident set after the load.

A model logged before the ONNX backend gets its serving build (ONNX graphs, the accuracy gate on the test split)
made here first, as `newscat tune` does at release.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/serving.py --model-uri models:/newscat@champion

With `--tracing`, only newscat's default path, with request tracing off and on (NEWSCAT_TRACING=on, its defaults
unless NEWSCAT_TRACE_* variables are exported), at 8 clients x 1 and x 16 news items, the two servers taking turns
round by round; the traces go to a fresh sqlite store (`--trace-uri` for another), and the traces each traced server
left in the store are counted once it stopped. Its writer's lag is read from its coverage run: the traces written per
second during the load (the throughput with the writer's CPU counted), the most requests waiting, and how long after
the load it took to write them. `--wait-ms N` adds a third server that paces its answers to its writer
(NEWSCAT_TRACE_WAIT_MS=N); `--levels 8x1` runs one level.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from provenance import provenance


def news_items(data_dir: Path) -> tuple[list[str], list[str]]:
    """AG News test items as clients send them (title + description, raw) and their titles alone."""
    from newscat.data.text import join_fields

    with (data_dir / "test.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return [join_fields(title, description) for _, title, description in rows], [row[1] for row in rows]


def serving_copy(pyfunc_dir: Path, data_dir: Path, target: Path) -> tuple[Path, dict]:
    """The model as `newscat tune` now releases it: as logged if it has ONNX graphs, else built here the same way
    (ONNX export, the accuracy gate on validation and training texts, the default path's requirements)."""
    from newscat.config import DataConfig
    from newscat.data.load import load_news
    from newscat.export.gate import AGREEMENT_TEXTS, GateTexts
    from newscat.export.package import gate_serving_paths
    from newscat.export.pyfunc import save_pyfunc
    from newscat.serving.backends import ONNX_DIR

    classifier = pyfunc_dir / "artifacts" / "classifier"
    if (classifier / ONNX_DIR).is_dir():
        return pyfunc_dir, json.loads((classifier / "newscat.json").read_text())["serving"]
    model_dir = Path(shutil.copytree(classifier, target.parent / "classifier"))
    data = load_news(DataConfig(source=str(data_dir)), seed=0)
    train = data.train.sample(min(AGREEMENT_TEXTS, len(data.train)), random_state=0)
    gate = GateTexts(
        data.validation["text"].tolist(), data.validation["label"].to_numpy(), train["text"].tolist(), "training texts"
    )
    build = gate_serving_paths(model_dir, gate)
    gate = {"default": build.decision.default, "paths": [dataclasses.asdict(s) for s in build.decision.scores]}
    return save_pyfunc(model_dir, target, build.decision.default.split("/")[0]), gate


def resident_mb(process: subprocess.Popen) -> float:
    """Resident memory of the server and its children (uvicorn runs under the mlflow CLI), in MB."""
    import psutil

    root = psutil.Process(process.pid)
    return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6, 1)


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
    env.update(extra_env or {})  # MLFLOW_MODELS_WORKERS=2 (the serve command's --workers) runs two processes
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


LEVELS = (("items", 1, 1), ("items", 8, 1), ("items", 8, 16), ("titles", 8, 1), ("titles", 8, 16))
# The torch fp32 path: the baseline of the single-client latency target.
SERVERS = {
    "newscat": {},
    "newscat_torch_fp32": {"NEWSCAT_BACKEND": "torch", "NEWSCAT_PRECISION": "fp32"},
    "transformers_flavor": {},
    "newscat_2_workers": {"MLFLOW_MODELS_WORKERS": "2"},  # one worker unless two measure better
}


def server_cpu_s(process: subprocess.Popen) -> float:
    """CPU seconds used so far by the server and its children."""
    import psutil

    root = psutil.Process(process.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def measure_server(
    process: subprocess.Popen, url: str, corpora: dict[str, list[str]], seconds: float, rounds: int
) -> dict[str, dict]:
    """Every level `rounds` times; per level the median of texts/s and of p50/p99 latency, the errors, and the
    server's CPU per request (the rest of the 2 cores goes to the client threads)."""
    load(url, corpora["items"], clients=2, batch=1, seconds=2)  # warm-up
    results = {}
    for corpus, clients, batch in LEVELS:
        cpu = server_cpu_s(process)
        runs = [load(url, corpora[corpus], clients=clients, batch=batch, seconds=seconds) for _ in range(rounds)]
        cpu = server_cpu_s(process) - cpu
        results[f"{corpus}:clients={clients},batch={batch}"] = {
            "texts_per_s": statistics.median(r["texts_per_s"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "server_cpu_ms_per_request": round(1000 * cpu / max(1, sum(r["requests"] for r in runs)), 2),
            "server_cores_busy": round(cpu / (seconds * rounds), 2),
        }
    return results


TRACE_EXPERIMENT = "serving-benchmark"
TRACING_LEVELS = (("items", 8, 1), ("items", 8, 16))  # the levels the tracing overhead target names


def wait_traced(url: str, trace_uri: str, seconds: float = 120) -> int:
    """Until an answer carries a prediction id and its trace is in the store: the tracer's one-time setup (finding
    the experiment, its first write building MLflow's exporter and database engine) is paid once per process and
    is not what the per-request target measures."""
    import mlflow

    deadline, posted = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        answer = requests.post(f"{url}/invocations", json={"inputs": ["warm-up"]}, timeout=60).json()
        posted += 1
        found = answer["predictions"][0].get("prediction_id")
        if found:
            trace_id = found.rsplit(":", 1)[0]
            while time.monotonic() < deadline:
                try:
                    mlflow.MlflowClient(trace_uri).get_trace(trace_id, display=False)
                    return posted  # requests sent, each traced or counted
                except mlflow.exceptions.MlflowException:
                    time.sleep(0.5)
        time.sleep(0.5)
    raise RuntimeError(f"the traced server wrote no trace within {seconds:.0f} s")


def measure_tracing(pyfunc_dir: Path, work: Path, corpora: dict[str, list[str]], args: argparse.Namespace) -> dict:
    """Tracing off and on, taking turns each round (a fresh server each time, so drift hits both alike): the median
    texts/s per level, their ratio, and the traced server's final counts from its log."""
    import mlflow

    trace_uri = args.trace_uri or f"sqlite:///{work}/traces.db"
    mlflow.MlflowClient(trace_uri).search_experiments()  # a new sqlite store builds its tables here, not under load
    traced_env = {"NEWSCAT_TRACING": "on", "MLFLOW_TRACKING_URI": trace_uri}
    # The served copy's LoggedModel lives in the model's own store, not in this one: a stand-in here gets the traces'
    # link and the writer's coverage run (served, traced, lost over time), which the lag below is read from.
    client = mlflow.MlflowClient(trace_uri)
    experiment = client.get_experiment_by_name(TRACE_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(TRACE_EXPERIMENT)
    stand_in = client.create_logged_model(experiment_id, name="served-copy", tags={"source": args.model_uri})
    traced_env["NEWSCAT_TRACE_MODEL_URI"] = f"models:/{stand_in.model_id}"
    variants = {"tracing_off": {"NEWSCAT_TRACING": "off"}, "tracing_on": traced_env}
    if args.wait_ms:  # a third server, paced to its writer (NEWSCAT_TRACE_WAIT_MS)
        variants["tracing_on_paced"] = {**traced_env, "NEWSCAT_TRACE_WAIT_MS": str(args.wait_ms)}
    runs: dict[str, dict[str, list[dict]]] = {name: {} for name in variants}
    traced: dict[str, list[dict]] = {name: [] for name in variants if name != "tracing_off"}
    chosen = [level for level in TRACING_LEVELS if f"{level[1]}x{level[2]}" in args.levels]
    for round_ in range(args.rounds):
        for name, env in variants.items():
            log = work / f"{name}-{round_}.log"
            before = stored_traces(trace_uri)
            process, url = start_server(pyfunc_dir, log, env)
            requests_sent = 0
            try:
                requests_sent += load(url, corpora["items"], clients=2, batch=1, seconds=2)["requests"]  # warm-up
                if name in traced:
                    requests_sent += wait_traced(url, trace_uri)
                loaded_from = time.time()
                for corpus, clients, batch in chosen:
                    result = load(url, corpora[corpus], clients=clients, batch=batch, seconds=args.seconds)
                    runs[name].setdefault(f"{corpus}:clients={clients},batch={batch}", []).append(result)
                    requests_sent += result["requests"]
                if name in traced:
                    lag = writer_lag(trace_uri, loaded_from, time.time())
            finally:
                process.terminate()
                process.wait(timeout=60)
            if name in traced:  # the writer may end after the server: within its deadline, the rest counted lost
                written = settled_traces(trace_uri) - before
                traced[name].append({"requests": requests_sent, "traces_written": written, **lag})
                print(json.dumps({"round": round_, name: traced[name][-1]}), file=sys.stderr, flush=True)
    medians = {
        name: {
            level: {
                "texts_per_s": statistics.median(r["texts_per_s"] for r in results),
                "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "errors": sum(r["errors"] for r in results),
                "requests": sum(r["requests"] for r in results),
            }
            for level, results in levels.items()
        }
        for name, levels in runs.items()
    }
    off = medians["tracing_off"]
    return {
        "trace_uri": trace_uri if args.trace_uri else "a fresh sqlite file",
        "trace_settings": {k: v for k, v in os.environ.items() if k.startswith("NEWSCAT_TRACE_")} or "defaults",
        "servers": medians,
        "texts_per_s_vs_off": {
            name: {k: round(medians[name][k]["texts_per_s"] / off[k]["texts_per_s"], 3) for k in off} for name in traced
        },
        "traced_per_round": traced,
        "traced_share": {
            name: round(sum(t["traces_written"] for t in ts) / max(1, sum(t["requests"] for t in ts)), 4)
            for name, ts in traced.items()
        },
    }


def writer_lag(trace_uri: str, began: float, ended: float, limit_s: float = 900) -> dict:
    """How far the writer kept up, from its coverage run's running totals (logged every 15 s while they change):
    requests traced during the load / the load's seconds (the throughput with the writer's CPU counted), the most
    requests waiting at any record, and the seconds after the load until none waited (polled, 5 s steps)."""
    import mlflow

    from newscat.names import ROLE_TAG, Role

    client = mlflow.MlflowClient(trace_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{ROLE_TAG}` = '{Role.TRACE_COVERAGE}' and attributes.start_time >= {int(began * 1000) - 600_000}"
    drained = None
    while drained is None and time.time() - ended < limit_s:
        runs = client.search_runs(ids, query, order_by=["attributes.start_time DESC"], max_results=1)
        if not runs and time.time() - ended > 60:  # no coverage run (no served model in this store): no lag to read
            break
        totals = runs[0].data.metrics if runs else {}
        pending = totals.get("served", 1) - sum(totals.get(k, 0) for k in ("not_sampled", "traced", "lost"))
        if runs and pending <= 0:
            drained = round(time.time() - ended, 1)
        else:
            time.sleep(5)
    if not runs:
        return {"writer": "no coverage run found"}
    history = {k: client.get_metric_history(runs[0].info.run_id, k) for k in ("served", "traced", "lost")}
    records: dict[int, dict[str, float]] = {}  # the totals of each record, by its timestamp
    for key, metrics in history.items():
        for metric in metrics:
            records.setdefault(metric.timestamp, {})[key] = metric.value
    waiting, traced = [], []  # of the records within the load: requests waiting, (ms, traced total)
    for stamp, totals in sorted(records.items()):
        if began * 1000 <= stamp <= ended * 1000:
            traced.append((stamp, totals.get("traced", 0)))
            waiting.append(totals.get("served", 0) - totals.get("traced", 0) - totals.get("lost", 0))
    rate = (traced[-1][1] - traced[0][1]) * 1000 / (traced[-1][0] - traced[0][0]) if len(traced) > 1 else None
    return {
        "traced_per_s_during_load": rate and round(rate, 1),  # between the first and last record within it
        "most_waiting": int(max(waiting, default=0)),
        "drained_s_after_load": drained,
        "coverage_records": len(history["served"]),
    }


def stored_traces(uri: str) -> int:
    """Traces in the store, all experiments."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return sum(len(page) for page in _trace_pages(client, ids))


def _trace_pages(client: object, ids: list[str]) -> Iterator[list]:
    token = None
    while True:
        page = client.search_traces(locations=ids, max_results=500, page_token=token, include_spans=False)
        yield page
        token = page.token
        if not token:
            return


def settled_traces(uri: str, quiet_s: float = 3.0, limit_s: float = 600.0) -> int:
    """The store's trace count once it stopped growing for `quiet_s` (the writer has finished)."""
    deadline, last, since = time.monotonic() + limit_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = stored_traces(uri)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
        time.sleep(0.5)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/newscat@champion", help="newscat pyfunc model URI")
    parser.add_argument("--data", default="../shared/data/ag_news", help="AG News directory (its test.csv)")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each load level")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each level (medians reported)")
    parser.add_argument("--tracing", action="store_true", help="measure request tracing off vs on instead")
    parser.add_argument("--trace-uri", help="tracking URI the traced server writes to (default: a fresh sqlite file)")
    parser.add_argument(
        "--levels", nargs="+", default=["8x1", "8x16"], choices=["8x1", "8x16"], help="with --tracing: the levels run"
    )
    parser.add_argument(
        "--wait-ms", type=int, default=0, help="with --tracing: a third server, paced (NEWSCAT_TRACE_WAIT_MS)"
    )
    parser.add_argument(
        "--current-code",
        action="store_true",
        help="serve the model's weights with this checkout's serving code instead of the code logged inside it",
    )
    args = parser.parse_args()

    import mlflow

    items, titles = news_items(Path(args.data))
    corpora = {"items": items[:2000], "titles": titles[:2000]}
    work = Path(tempfile.mkdtemp(prefix="newscat-serving-"))
    downloaded = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=str(work / "pyfunc")))
    if args.current_code:
        from newscat.export.pyfunc import shipped_code

        shutil.rmtree(downloaded / "code" / "newscat")
        shipped_code(downloaded / "code")
    pyfunc_dir, gate = serving_copy(downloaded, Path(args.data), work / "release")
    if args.tracing:
        report = {"benchmark": "serving_tracing", **provenance(), "model_uri": args.model_uri}
        report["serving_code"] = "this checkout's" if args.current_code else "logged with the model"
        report |= {"seconds_per_level": args.seconds, "rounds": args.rounds, "levels": args.levels}
        report["wait_ms"] = args.wait_ms
        print(json.dumps(report | measure_tracing(pyfunc_dir, work, corpora, args), indent=2))
        return
    flavor_dir = flavor_copy(downloaded / "artifacts" / "classifier", work / "flavor")
    report: dict = {
        "benchmark": "serving",
        **provenance(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        "model_uri": args.model_uri,
        "gate": gate,
        "seconds_per_level": args.seconds,
        "rounds": args.rounds,
        "servers": {},
        "resident_mb": {},
    }
    for name, env in SERVERS.items():
        path = flavor_dir if name == "transformers_flavor" else pyfunc_dir
        process, url = start_server(path, work / f"{name}.log", env)
        try:
            report["servers"][name] = measure_server(process, url, corpora, args.seconds, args.rounds)
            report["resident_mb"][name] = resident_mb(process)
            print(json.dumps({name: report["servers"][name]}), flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
        report.setdefault("engine", {})[name] = next(
            (line for line in (work / f"{name}.log").read_text().splitlines() if "newscat model serves" in line), ""
        )
    ours, torch32, flavor, two = (report["servers"][n] for n in SERVERS)
    report["ratios"] = {
        "texts_per_s_vs_flavor": {k: round(ours[k]["texts_per_s"] / flavor[k]["texts_per_s"], 2) for k in ours},
        "texts_per_s_vs_torch_fp32": {k: round(ours[k]["texts_per_s"] / torch32[k]["texts_per_s"], 2) for k in ours},
        "two_workers_vs_one": {k: round(two[k]["texts_per_s"] / ours[k]["texts_per_s"], 2) for k in ours},
        "one_client_one_item_p50_vs_torch_fp32": round(
            ours["items:clients=1,batch=1"]["p50_ms"] / torch32["items:clients=1,batch=1"]["p50_ms"], 2
        ),
        "errors": sum(r["errors"] for server in report["servers"].values() for r in server.values()),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
