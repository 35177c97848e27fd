"""Load test of `mlflow models serve` with a newscat model: many concurrent clients for a bounded time. Prints JSON.

Clients are threads on this machine, each posting a mix of requests in a loop: one news item (title + description,
as users send them), 16 items, a long article (truncated by the model), odd Unicode, and a malformed body that must
get a 400 (never a 5xx). The server
process's resident memory (with its children) is sampled every second; growth is measured from the end of the
warm-up to the end of the run. The same load runs against one server per variant (default environment, and
MALLOC_ARENA_MAX=2), one after the other.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/load_test.py --model-uri models:/newscat@champion \
        --clients 12 --warmup 60 --seconds 120
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
from provenance import emit, provenance
from serving import start_server

ODD = ["", "\u200b\u200b", "\u202eelbat\u202c", "\x00\x07", "🚀📈🏈", "مرحبا بالعالم", "a\u0301" * 30]


def news_items(path: Path, n: int) -> list[str]:
    """The first `n` rows of an AG News CSV (label, title, description; no header) as clients send them."""
    import csv

    from newscat.data.text import join_fields

    with path.open(encoding="utf-8", newline="") as handle:
        return [join_fields(row[1], row[2]) for _, row in zip(range(n), csv.reader(handle), strict=False)]


def request_mix(texts: list[str], articles: list[str]) -> list[tuple[str, dict, int]]:
    """(kind, body, expected status): the cycle every client walks through."""
    return [
        ("one_item", {"inputs": [texts[0]]}, 200),
        ("sixteen_items", {"inputs": texts[:16]}, 200),
        ("one_item", {"dataframe_records": [{"text": texts[1]}]}, 200),
        ("long_article", {"inputs": [" ".join(articles * 10)]}, 200),
        ("odd_unicode", {"inputs": ODD}, 200),
        ("one_item", {"inputs": [texts[2]]}, 200),
        ("malformed", {"inputs": {"text": [1, None]}}, 400),
    ]


def rss_mb(process: psutil.Process) -> float:
    """Resident memory of the server and every process it started (uvicorn workers)."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that just exited
            total += proc.memory_info().rss
    return total / 2**20


def drive(url: str, mix: list[tuple[str, dict, int]], *, clients: int, seconds: float) -> dict:
    """Every client walks the mix (from its own offset) until `seconds` pass; returns per-kind results."""
    results: dict[str, list[float]] = {kind: [] for kind, _, _ in mix}
    wrong: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        session = requests.Session()
        for i in range(1_000_000):
            if time.monotonic() >= stop_at:
                return
            kind, body, expected = mix[(offset + i) % len(mix)]
            began = time.perf_counter()
            try:
                status = session.post(f"{url}/invocations", json=body, timeout=120).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            elapsed = time.perf_counter() - began
            with lock:
                results[kind].append(elapsed)
                if status != expected:
                    wrong.append(f"{kind}: {status}")

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    every = sorted(t for times in results.values() for t in times)
    texts_per_request = {kind: len(body.get("inputs", body.get("dataframe_records", []))) for kind, body, _ in mix}
    return {
        "wall_s": round(wall, 1),
        "requests": len(every),
        "requests_per_s": round(len(every) / wall, 1),
        "texts_per_s": round(sum(len(results[k]) * texts_per_request[k] for k in results) / wall, 1),
        "unexpected_status": len(wrong),
        "unexpected_examples": wrong[:5],
        "p50_ms": _ms(every, 0.5),
        "p99_ms": _ms(every, 0.99),
        "by_kind": {
            kind: {"requests": len(times), "p50_ms": _ms(sorted(times), 0.5), "p99_ms": _ms(sorted(times), 0.99)}
            for kind, times in results.items()
        },
    }


def _ms(ordered: list[float], q: float) -> float:
    return round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1) if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/newscat@champion", help="newscat pyfunc model URI")
    parser.add_argument("--data", default="../shared/data/ag_news/test.csv", help="AG News CSV for texts")
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients (>= 8)")
    parser.add_argument("--seconds", type=float, default=120.0, help="duration of the measured run")
    # Measured: resident memory climbs for ~60 s under this load (allocator arenas, oneDNN kernels per shape), then
    # stays flat; growth is judged after that.
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of the same load before measuring")
    parser.add_argument(
        "--variants", default="default,malloc_arena_max_2", help=f"server environments: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import csv

    import mlflow

    texts = news_items(Path(args.data), 200)
    with Path(args.data).open(encoding="utf-8", newline="") as handle:
        articles = [row[2] for _, row in zip(range(20), csv.reader(handle), strict=False)]
    mix = request_mix(texts, articles)
    work = Path(tempfile.mkdtemp(prefix="newscat-load-"))
    model_dir = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=str(work / "model")))
    report = {
        "benchmark": "load_test",
        **provenance(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        "model_uri": args.model_uri,
        "server": "mlflow models serve --env-manager local (1 worker)",
        "clients": args.clients,
        "warmup_s": args.warmup,
        "measured_s": args.seconds,
        "request_mix": [kind for kind, _, _ in mix],
        "variants": {},
    }
    for variant in args.variants.split(","):
        extra_env = VARIANTS[variant]
        report["variants"][variant] = {"env": extra_env, **run_variant(model_dir, work, mix, args, extra_env)}
        print(json.dumps({variant: report["variants"][variant]["memory_mb"]}), file=sys.stderr, flush=True)
    emit(report, args.out)


# Server environments compared side by side. glibc gives busy threads their own malloc arenas (up to 8 per core)
# and keeps what they grew; MLflow's server runs each request in a thread of a pool.
VARIANTS = {"default": {}, "malloc_arena_max_2": {"MALLOC_ARENA_MAX": "2"}}


def run_variant(model_dir: Path, work: Path, mix: list, args: argparse.Namespace, extra_env: dict[str, str]) -> dict:
    """Start a server, warm it up, measure, and sample its memory every second."""
    server, url = start_server(model_dir, work / f"server-{len(extra_env)}.log", extra_env)
    samples: list[tuple[float, float]] = []
    sampling = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not sampling.wait(1.0):
            samples.append((round(time.monotonic() - started, 1), round(rss_mb(psutil.Process(server.pid)), 1)))

    try:
        rss_idle = rss_mb(psutil.Process(server.pid))
        threading.Thread(target=sample, daemon=True).start()
        warm = drive(url, mix, clients=args.clients, seconds=args.warmup)
        rss_warm = rss_mb(psutil.Process(server.pid))
        measured = drive(url, mix, clients=args.clients, seconds=args.seconds)
        rss_end = rss_mb(psutil.Process(server.pid))
    finally:
        sampling.set()
        server.terminate()
        server.wait(timeout=30)
    after_warmup = [mb for t, mb in samples if t >= args.warmup]
    return {
        "warmup": {"requests": warm["requests"], "unexpected_status": warm["unexpected_status"]},
        "measured": measured,
        "memory_mb": {
            "idle": round(rss_idle, 1),
            "after_warmup": round(rss_warm, 1),
            "end": round(rss_end, 1),
            "max_after_warmup": max(after_warmup, default=rss_end),
            "median_after_warmup": round(statistics.median(after_warmup), 1) if after_warmup else rss_end,
            "growth_after_warmup_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2),
            "max_growth_after_warmup_pct": round(100 * (max(after_warmup, default=rss_end) - rss_warm) / rss_warm, 2),
        },
        "rss_samples_every_10s": samples[::10],
    }


if __name__ == "__main__":
    main()
