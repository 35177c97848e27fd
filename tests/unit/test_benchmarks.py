"""Every benchmark script still imports and parses its options (`--help` in a subprocess, as it is run), and records
where its figures come from. Nothing is measured here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "provenance.py")


def _help(script: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(script.relative_to(ROOT)), "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """`python benchmarks/X.py --help` of every script, run side by side (each imports torch or mlflow)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((s.name for s in SCRIPTS), pool.map(_help, SCRIPTS), strict=True))


def test_the_scripts_are_found() -> None:
    assert {"budget.py", "load_test.py", "serving.py", "train_throughput.py"} <= {s.name for s in SCRIPTS}


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS])
def test_each_script_imports_and_parses_its_options(script: str, helps: dict[str, subprocess.CompletedProcess]) -> None:
    done = helps[script]
    assert done.returncode == 0, f"{script} --help failed:\n{done.stderr[-3000:]}"
    assert done.stdout.startswith("usage: "), done.stdout[:500]


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS])
def test_each_script_records_its_provenance(script: str) -> None:
    assert "**provenance()" in (BENCHMARKS / script).read_text(encoding="utf-8")


def test_provenance_names_cpu_date_commit_and_command() -> None:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from provenance import provenance; "
        "print(json.dumps(provenance(['benchmarks/budget.py', '--jobs', 'seed', '--data', 'a b'])))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    recorded = json.loads(done.stdout)
    assert set(recorded) == {"cpu", "date", "commit", "command"}
    assert recorded["command"] == "python benchmarks/budget.py --jobs seed --data 'a b'"
    assert recorded["date"][:2] == "20" and recorded["date"].endswith("Z")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert recorded["commit"].removesuffix("+dirty") == (head or "unknown")
    assert "cores" in recorded["cpu"]


def test_pruning_replay_stops_what_the_pruner_would_and_counts_the_steps() -> None:
    import argparse

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pruning
    finally:
        sys.path.remove(str(BENCHMARKS))
    args = argparse.Namespace(n_train=100, n_eval=500, max_epochs=2, evals_per_epoch=4)
    good = {"params": {"batch_size": 10}, "accuracy_at": {k: 0.5 + 0.05 * k for k in range(1, 9)}}
    bad = {"params": {"batch_size": 20}, "accuracy_at": {k: 0.3 + 0.01 * k for k in range(1, 5)}}  # a 1-epoch trial
    median = pruning.replay("median@4", [good, bad], args)
    assert median["trials"] == {"complete": 1, "pruned": 1}
    assert median["optimizer_steps"] == 20 + 1  # 2 epochs of 10 steps; a quarter of 5 steps, rounded
    assert median["best_val_accuracy"] == pytest.approx(0.9)
    # At 2 evaluations per epoch the same curves are read at points 2, 4, 6, 8: the bad trial stops at half an epoch.
    assert pruning.replay("median@2", [good, bad], args)["epochs_run"] == 2.5
    assert pruning.replay("none@4", [good, bad], args)["optimizer_steps"] == 20 + 5
    # Racing on 500 rows: the bad trial trails by 24 points at its first point (2 standard errors: about 4).
    assert pruning.replay("racing@4", [good, bad], args)["optimizer_steps"] == 20 + 1
    close = {"params": {"batch_size": 20}, "accuracy_at": {k: 0.48 + 0.05 * k for k in range(1, 5)}}
    assert pruning.replay("racing@4", [good, close], args)["optimizer_steps"] == 20 + 5  # 2 points behind: noise
    # racingZ: the same rule at Z standard errors; at 0.5 (1.1 points here) the 2-point gap prunes.
    assert pruning.replay("racing0.5@4", [good, close], args)["optimizer_steps"] == 20 + 1
    assert pruning.replay("median@4", [good, close], args)["optimizer_steps"] == 20 + 1
    with pytest.raises(SystemExit, match="must divide"):
        pruning.replay("median@3", [good], args)
    # Hyperband's brackets hash the study's name: a replay is named as the real run's study, so it repeats itself.
    many = [{**good, "accuracy_at": {k: v - 0.01 * i for k, v in good["accuracy_at"].items()}} for i in range(9)]
    assert pruning.replay("hyperband@4", many, args) == pruning.replay("hyperband@4", many, args)
    # Patience: the median pruner is asked only once the last 2 points fell below the best before them (Optuna's
    # PatientPruner, min_delta 0): never for a rising curve; for a falling one at its third point, and it stops it.
    assert pruning.replay("patient1@4", [good, bad], args)["trials"] == {"complete": 2}
    falling = {"params": {"batch_size": 20}, "accuracy_at": {k: 0.31 - 0.01 * k for k in range(1, 5)}}
    assert pruning.replay("patient1@4", [good, falling], args)["epochs_run"] == 2 + 0.75


def test_pruning_replays_a_recorded_study_with_its_settings(tmp_path: Path) -> None:
    import argparse

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pruning
    finally:
        sys.path.remove(str(BENCHMARKS))
    curve = {"params": {"batch_size": 10}, "accuracy_at": {"1": 0.5, "2": 0.7}}
    settings = {"data": "d", "n_trials": 1, "n_train": 100, "n_eval": 50, "max_epochs": 1, "evals_per_epoch": 2}
    saved = {"settings": {**settings, "pruners": "none,racing"}, "results": {"none": {"curves": [curve]}}}
    (tmp_path / "r.json").write_text(json.dumps(saved))
    args = argparse.Namespace(n_train=5, n_eval=5, max_epochs=9, evals_per_epoch=4)
    base = pruning.recorded_base(str(tmp_path / "r.json"), args)
    assert (args.n_train, args.n_eval, args.max_epochs, args.evals_per_epoch) == (100, 50, 1, 2)
    assert base["curves"][0]["accuracy_at"] == {1: 0.5, 2: 0.7}
    assert pruning.replay("none@2", base["curves"], args)["optimizer_steps"] == 10


def test_weight_averaging_ema_is_bias_corrected() -> None:
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from weight_averaging import MovingAverage
    finally:
        sys.path.remove(str(BENCHMARKS))
    model = torch.nn.Linear(1, 1)
    constant, ramp = MovingAverage(0.998), MovingAverage(0.9)
    for step in range(1, 201):
        with torch.no_grad():
            model.weight.fill_(3.0)
        constant.on_step_end(None, None, None, model=model)
        with torch.no_grad():
            model.weight.fill_(float(step))
        ramp.on_step_end(None, None, None, model=model)
    # A constant stays itself from the first step on (no pull toward the zero start), and a ramp's average lags it by
    # decay / (1 - decay) steps, whatever decay was asked (a warm-up would have capped it).
    assert constant.shadow["weight"].item() == pytest.approx(3.0)
    assert ramp.shadow["weight"].item() == pytest.approx(200 - 9, abs=1e-3)


def test_monitor_alarms_counts_false_alarms_detections_and_estimate_errors_with_the_monitors_decision() -> None:
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import monitor_alarms
    finally:
        sys.path.remove(str(BENCHMARKS))
    from newscat.export.reference import CORRECT, feature_frame

    rng = np.random.default_rng(0)

    def pool(n: int, classes: int, words: float) -> pd.DataFrame:
        tokens = rng.normal(words, words / 3, n).clip(3, 128).astype(int)
        confidence = rng.uniform(0.4, 1.0, n)
        frame = feature_frame(
            tokens * 5, tokens, [0] * n, tokens >= 128, rng.choice(list("ABCD")[:classes], n), confidence
        )
        frame[CORRECT] = (rng.uniform(size=n) < confidence).astype(float)  # a calibrated model
        return frame

    reference, healthy = pool(800, 4, 40), pool(5000, 4, 40)
    calm = monitor_alarms.judge_windows(reference, healthy, 1000, 40, rng, 0.7)
    assert calm["alarms"]["hits"] <= 6 and calm["alarms"]["windows"] == 40  # alpha 0.05 + slack
    assert calm["estimate_error"]["p90_abs"] < 0.05 and calm["mean_confidence_error"]["p90_abs"] < 0.05
    assert calm["estimate_below_floor"] == 0  # estimated accuracy about 0.7, the floor 0.65
    titles = monitor_alarms.judge_windows(reference, pool(5000, 4, 10), 1000, 20, rng, 0.7)
    assert titles["alarms"]["rate"] == 1.0 and titles["drifted_by_feature"]["tokens"] == 20
    one = monitor_alarms.judge_windows(reference, pool(5000, 1, 40), 1000, 20, rng, 0.7)
    assert one["drifted_by_feature"]["label"] == 20
    worse = monitor_alarms.judge_windows(reference, healthy, 1000, 20, rng, 0.9)  # a test accuracy it cannot keep
    assert worse["estimate_below_floor"] == 20 and worse["alarms"]["rate"] == 1.0
    assert monitor_alarms.rate(0, 200) == {"hits": 0, "windows": 200, "rate": 0.0, "ci95": [0.0, 0.0188]}

    test = pd.DataFrame(
        {"label": [0, 1], "title": ["Cup final ", "Oil up"], "description": ["Won 2-1.", "Brent rose."]}
    )
    train = pd.DataFrame({"label": [3], "title": ["Chip"], "description": ["A new chip."]})
    shifted = monitor_alarms.shifted_texts(test, train, rng)
    assert shifted["titles"]["text"].tolist() == ["Cup final", "Oil up"]
    assert shifted["descriptions"]["text"].tolist() == ["Won 2-1.", "Brent rose."]
    assert shifted["other_descriptions"]["text"].tolist() == ["Cup final  A new chip.", "Oil up A new chip."]
    assert shifted["other_descriptions"]["label"].tolist() == [0, 1]  # the title's label


def test_soak_reads_the_servers_final_counts_and_fits_the_memory_trend() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from soak import final_counts, memory_trend, per_minute
    finally:
        sys.path.remove(str(BENCHMARKS))
    log = (
        "newscat tracing: 3 lost traces; requests since start: 9 traced, 1 lost: queue full\n"
        "newscat tracing: 3 lost traces; requests since start: 12 traced, 3 lost: backlog full (slow, or down); "
        "4 waited for the writer (12 ms on average)\n"
    )
    assert final_counts(log) == {"traced": 12, "lost: backlog full (slow, or down)": 3}  # the last line only
    assert final_counts("no tracing here") == {}
    flat = memory_trend([(t, 500.0 + (t % 10 == 0)) for t in range(0, 1200, 5)], began=0)
    growing = memory_trend([(t, 500.0 + t / 60) for t in range(0, 1200, 5)], began=0)  # 1 MB a minute
    assert abs(flat["slope_mb_per_10_min"]) < 0.1 and abs(flat["change_pct"]) < 0.3
    assert growing["slope_mb_per_10_min"] == pytest.approx(10.0) and growing["change_pct"] > 3
    answers = [(float(t), 16 if t % 2 else 1, t != 70, 0.01) for t in range(120)]  # one request a second
    minutes = per_minute(answers, began=0.0, ended=125.0)  # whole minutes only
    assert [m["requests"] for m in minutes] == [60, 60] and [m["errors"] for m in minutes] == [0, 1]
    assert minutes[0]["texts_per_s"] == round((30 * 16 + 30) / 60, 1)
