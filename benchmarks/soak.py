"""Soak: `mlflow models serve` with request tracing on, for a long run at 8 clients x 1 news item plus 2 clients x
16 (AG News test items, title + description, as users send them), the traces going to a tracking store (an
`mlflow server` on PostgreSQL in the published run). Prints JSON.

Clients are threads on this machine. Per minute: requests, errors and texts/s. Every 5 s: the resident memory of the
scoring server (uvicorn) and of its trace writer, apart; memory is judged flat by the change from the first minute
after the warm-up to the last, and by the slope fitted over that span. At the end the whole process group gets
SIGTERM, as systemd and Ctrl-C stop it; then the server's final counts (its log), the writer's coverage run and the
traces in the store are read, and must agree: every request answered is traced, or counted lost with its reason.

The served copy's LoggedModel lives in the model's own store: a stand-in LoggedModel in the trace store gets the
traces' link and the coverage run (as in `serving.py --tracing`); use a fresh store, since the traces are counted
over all of its experiments.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/soak.py --model-uri models:/newscat@champion \
        --trace-uri http://127.0.0.1:5098 --minutes 30 --out benchmarks/results/DATE-soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
from provenance import emit, provenance
from serving import (
    TRACE_EXPERIMENT,
    free_port,
    news_items,
    serving_copy,
    settled_traces,
    stored_traces,
    wait_traced,
    writer_lag,
)

CLIENTS = ((8, 1), (2, 16))  # (clients, news items per request)
SAMPLE_EVERY_S = 5.0


def start_traced_server(model_dir: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` in its own process group (so the group can be stopped as systemd does); its URL."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local"]
    full_env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **env)
    process = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=full_env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("server did not start within 180 s")


def parts(process: subprocess.Popen) -> dict[str, psutil.Process]:
    """The scoring server (uvicorn) and its trace writer among the CLI's descendants."""
    found = {}
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            line = " ".join(child.cmdline())
            if "trace_writer" in line:
                found["writer"] = child
            elif "uvicorn" in line or "gunicorn" in line:
                found.setdefault("server", child)
    return found


class Clients:
    """Client threads posting until stopped; every answer recorded as (time, texts, ok, seconds)."""

    def __init__(self, url: str, items: list[str]) -> None:
        self.url, self.items = url, items
        self.answers: list[tuple[float, int, bool, float]] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(batch, 7919 * k + 104729 * batch), daemon=True)
            for clients, batch in CLIENTS
            for k in range(clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _client(self, batch: int, offset: int) -> None:
        session = requests.Session()
        i = 0
        while not self._stop.is_set():
            body = {"inputs": [self.items[(offset + i * batch + j) % len(self.items)] for j in range(batch)]}
            i += 1
            began = time.perf_counter()
            try:
                response = session.post(f"{self.url}/invocations", json=body, timeout=120)
                ok, why = response.status_code == 200, f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.answers.append((time.time(), batch, ok, time.perf_counter() - began))
                if not ok:
                    self.failures.append(why)


def per_minute(answers: list[tuple[float, int, bool, float]], began: float, ended: float) -> list[dict]:
    """Requests, errors, texts/s and median latency of each whole minute of [began, ended)."""
    minutes = []
    for m in range(int((ended - began) // 60)):
        lo, hi = began + 60 * m, began + 60 * (m + 1)
        inside = [a for a in answers if lo <= a[0] < hi]
        minutes.append(
            {
                "minute": m + 1,
                "requests": len(inside),
                "errors": sum(not a[2] for a in inside),
                "texts_per_s": round(sum(a[1] for a in inside) / 60, 1),
                "p50_ms": round(1000 * statistics.median(a[3] for a in inside), 1) if inside else None,
            }
        )
    return minutes


def memory_trend(samples: list[tuple[float, float]], began: float) -> dict:
    """Resident MB over the measured span: the median of its first and last minute, their change, and the
    least-squares slope in MB per 10 minutes."""
    kept = [(t, mb) for t, mb in samples if t >= began]
    if len(kept) < 3:
        return {"samples": len(kept)}
    first = [mb for t, mb in kept if t < kept[0][0] + 60]
    last = [mb for t, mb in kept if t > kept[-1][0] - 60]
    mean_t, mean_mb = statistics.fmean(t for t, _ in kept), statistics.fmean(mb for _, mb in kept)
    slope = sum((t - mean_t) * (mb - mean_mb) for t, mb in kept) / sum((t - mean_t) ** 2 for t, _ in kept)
    return {
        "first_minute_mb": round(statistics.median(first), 1),
        "last_minute_mb": round(statistics.median(last), 1),
        "change_pct": round(100 * (statistics.median(last) / statistics.median(first) - 1), 2),
        "slope_mb_per_10_min": round(slope * 600, 2),
        "max_mb": round(max(mb for _, mb in kept), 1),
        "samples": len(kept),
    }


def final_counts(log: str) -> dict[str, int]:
    """The server's last tracing counts in its log: what became of each request since the start."""
    lines = [line for line in log.splitlines() if "lost traces; requests since start: " in line]
    if not lines:
        return {}
    counted = lines[-1].split("requests since start: ", 1)[1].split(";")[0]
    pairs = (part.split(" ", 1) for part in re.split(r", (?=\d+ )", counted.strip()))  # a reason may hold commas
    return {what: int(n) for n, what in pairs}


def coverage_totals(trace_uri: str) -> dict[str, float]:
    """The newest coverage run's totals (served, traced, lost, not sampled) in the trace store."""
    import mlflow

    from newscat.names import ROLE_TAG, Role

    client = mlflow.MlflowClient(trace_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        ids, f"tags.`{ROLE_TAG}` = '{Role.TRACE_COVERAGE}'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return {k: int(v) for k, v in runs[0].data.metrics.items()} if runs else {}


def soak(model_dir: Path, items: list[str], work: Path, args: argparse.Namespace) -> dict:
    """The run: start, warm up, load for `--minutes` while sampling memory, stop with SIGTERM, account."""
    import mlflow

    client = mlflow.MlflowClient(args.trace_uri)
    experiment = client.get_experiment_by_name(TRACE_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(TRACE_EXPERIMENT)
    stand_in = client.create_logged_model(experiment_id, name="served-copy", tags={"source": args.model_uri})
    env = {
        "NEWSCAT_TRACING": "on",
        "MLFLOW_TRACKING_URI": args.trace_uri,
        "NEWSCAT_TRACE_MODEL_URI": f"models:/{stand_in.model_id}",
    }
    before = stored_traces(args.trace_uri)
    log = work / "server.log"
    process, url = start_traced_server(model_dir, log, env)
    samples: dict[str, list[tuple[float, float]]] = {"server": [], "writer": []}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(SAMPLE_EVERY_S):
            for name, proc in parts(process).items():
                with contextlib.suppress(psutil.NoSuchProcess):
                    samples[name].append((time.time(), proc.memory_info().rss / 2**20))

    threading.Thread(target=sample, daemon=True).start()
    clients = Clients(url, items)
    try:
        warm_requests = wait_traced(url, args.trace_uri)
        clients.start()
        time.sleep(args.warmup)
        began = time.time()
        time.sleep(60 * args.minutes)
        ended = time.time()
        clients.stop()
    finally:
        sampling.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # every process of the group, as systemd stops a service
        stopped_at = time.monotonic()
        process.wait(120)
        while _running(process.pid) and time.monotonic() < stopped_at + 60:  # the writer may end after the server
            time.sleep(0.2)
    stop_s = round(time.monotonic() - stopped_at, 1)
    measured = [a for a in clients.answers if began <= a[0] < ended]
    answered = len(clients.answers) + warm_requests
    counts = final_counts(log.read_text())
    coverage = coverage_totals(args.trace_uri)
    written = settled_traces(args.trace_uri) - before
    return {
        "clients": [f"{c} x {b}" for c, b in CLIENTS],
        "warmup_s": args.warmup,
        "measured_minutes": args.minutes,
        "requests_answered": answered,
        "errors": sum(not a[2] for a in clients.answers),
        "error_examples": clients.failures[:5],
        "measured": {
            "requests": len(measured),
            "texts_per_s": round(sum(a[1] for a in measured) / (ended - began), 1),
            "p50_ms": round(1000 * statistics.median(a[3] for a in measured), 1),
            "p99_ms": round(1000 * sorted(a[3] for a in measured)[int(0.99 * (len(measured) - 1))], 1),
        },
        "per_minute": per_minute(clients.answers, began, ended),
        "resident_memory": {name: memory_trend(s, began) for name, s in samples.items()},
        "stop": {"signal": "SIGTERM to the process group", "every_process_ended_s": stop_s},
        "accounting": {
            "server_final_counts": counts,
            "server_counted": sum(counts.values()),
            "coverage_run": coverage,
            "traces_in_store": written,
            "traced_share": round(written / max(1, answered), 5),
            "every_request_accounted": sum(counts.values()) == answered == coverage.get("served"),
        },
        "writer": writer_lag(args.trace_uri, began, ended),
    }


def _running(pgid: int) -> bool:
    """Whether a process of the group `pgid` still runs (zombies of reparented children do not count)."""
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/newscat@champion", help="newscat pyfunc model URI")
    parser.add_argument("--data", default="../shared/data/ag_news", help="AG News directory (its test.csv)")
    parser.add_argument("--trace-uri", required=True, help="tracking URI of the store the traces go to (fresh)")
    parser.add_argument("--minutes", type=float, default=30.0, help="measured minutes after the warm-up")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds of the same load before measuring")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import mlflow

    items, _ = news_items(Path(args.data))
    work = Path(tempfile.mkdtemp(prefix="newscat-soak-"))
    downloaded = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=str(work / "pyfunc")))
    model_dir, gate = serving_copy(downloaded, Path(args.data), work / "release")
    report = {"benchmark": "soak", **provenance(), "model_uri": args.model_uri, "serving": gate}
    report["trace_uri"] = re.sub(r"//[^@/]*@", "//***@", args.trace_uri)  # no password in the results
    report["trace_settings"] = {k: v for k, v in os.environ.items() if k.startswith("NEWSCAT_TRACE_")} or "defaults"
    emit(report | soak(model_dir, items, work, args), args.out)


if __name__ == "__main__":
    main()
