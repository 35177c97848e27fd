"""The monitor's drift decision and accuracy estimate on real answers: false alarms on healthy traffic, detection of
shifted traffic, and the estimate's error against the true accuracy, window by window.

The registered model answers, on its served path (the pyfunc's own `Scorer`, as the release builds the reference):

- the **reference**: the validation rows of the training file, rebuilt as the job cut them (`--seed`, the default
  data config), with whether each answer was right: what the release now logs (checked against the reference the
  model logged: same texts, same confidences);
- **healthy** traffic: the official test split, title + description (7,600 texts);
- shifted traffic, each built from the test split: one class removed (`no_<class>`), one class only
  (`only_<class>`), titles alone (`titles`), descriptions alone (`descriptions`: a feed that drops the headline),
  and descriptions from another source (`other_descriptions`: each test title followed by the description of a
  random row of the training file, a feed that joins two sources wrongly; its true label is the title's).

Windows are drawn with replacement from each pool (--windows of --sizes texts from the healthy pool, --windows of
--shift-size from each shifted one), every answer unlabelled; each is judged by the monitor's own decision with the
default `MonitorConfig` (`judge_drift` and `drift_problems`, and `estimate_problems` on the estimate against the
version's test accuracy) and its accuracy estimated by the monitor's estimate (`estimate_accuracy`, Platt-calibrated
on the reference), by isotonic calibration on the same rows and by the old estimate (the mean top-class
probability). The test split only measures: alpha and the effect floor were fixed before this ran. Scores are
cached per model under --cache. Prints JSON; --out writes it too.

    python benchmarks/monitor_alarms.py --model models:/newscat@challenger \\
        --tracking-uri sqlite:////tmp/mainjob/mlflow.db --data ../shared/data/ag_news \\
        --out benchmarks/results/2026-12-05-monitor_alarms.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from provenance import provenance

from newscat.config import MonitorConfig

RAW_COLUMNS = ["label", "title", "description"]


def raw_rows(path: Path, names: Sequence[str]) -> pd.DataFrame:
    """An AG News CSV (no header: label 1-K, title, description) with the label as a class index."""
    frame = pd.read_csv(path, header=None, names=RAW_COLUMNS, dtype=str, keep_default_na=False)
    frame["label"] = frame["label"].astype(int) - 1
    assert frame["label"].between(0, len(names) - 1).all()
    return frame


def shifted_texts(test: pd.DataFrame, train: pd.DataFrame, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """The pools that need their own answers (`text`, `label`): titles, descriptions, other sources' descriptions."""
    from newscat.data.text import join_fields

    other = train["description"].to_numpy()[rng.integers(0, len(train), len(test))]
    return {
        "titles": pd.DataFrame({"text": test["title"].str.strip(), "label": test["label"]}),
        "descriptions": pd.DataFrame({"text": test["description"].str.strip(), "label": test["label"]}),
        "other_descriptions": pd.DataFrame(
            {"text": [join_fields(t, d) for t, d in zip(test["title"], other, strict=True)], "label": test["label"]}
        ),
    }


def answered(scorer: object, rows: pd.DataFrame, cache: Path) -> pd.DataFrame:
    """The feature table (with `correct`) of `rows` as the served model answers them; read from `cache` if there."""
    from newscat.export.reference import features_of_answers
    from newscat.serving.inputs import CHARS_PER_TOKEN_CAP

    if cache.exists():
        return pd.read_parquet(cache)
    texts = rows["text"].tolist()
    scores = scorer.scores(texts)
    counts = scorer.encoder.counts(texts, max_chars=scorer.max_length * CHARS_PER_TOKEN_CAP)
    frame = features_of_answers(
        texts, scores.probabilities, scores.truncated, counts, scorer.label_names, rows["label"].tolist()
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(cache, index=False)
    return frame


def rate(hits: int, trials: int) -> dict[str, float | int]:
    """A share with its 95% Wilson interval."""
    from newscat.monitoring.monitor import wilson

    low, high = wilson(hits, trials)
    return {"hits": hits, "windows": trials, "rate": round(hits / trials, 4), "ci95": [round(low, 4), round(high, 4)]}


def judge_windows(
    reference: pd.DataFrame,
    pool: pd.DataFrame,
    size: int,
    windows: int,
    rng: np.random.Generator,
    test_accuracy: float | None,
) -> dict[str, object]:
    """`windows` windows of `size` unlabelled texts drawn with replacement from `pool`: how many the monitor calls
    unhealthy (and why: which features drifted, how often the estimate fell below the floor), and the accuracy
    estimates' errors against each window's true accuracy."""
    from newscat.export.reference import CORRECT
    from newscat.monitoring.drift import TESTS, drift_problems, judge_drift
    from newscat.monitoring.estimate import ConfidenceCalibration, estimate_accuracy, estimate_problems

    cfg = MonitorConfig()
    calibration = ConfidenceCalibration.from_reference(reference)
    isotonic = ConfidenceCalibration.from_reference(reference, "isotonic")
    alarms, low_estimates, by_feature = 0, 0, dict.fromkeys(TESTS, 0)
    errors: dict[str, list[float]] = {"estimate": [], "isotonic": [], "mean_confidence": []}
    for _ in range(windows):
        live = pool.iloc[rng.integers(0, len(pool), size)]
        drift = judge_drift(reference, live)
        estimate = estimate_accuracy(live["confidence"], calibration)
        low = estimate_problems(estimate, size, test_accuracy, cfg)
        alarms += bool(drift_problems(drift, cfg.max_drift_share, cfg.prediction_drift) or low)
        low_estimates += bool(low)
        for name in drift.drifted:
            by_feature[name] += 1
        truth = float(live[CORRECT].mean())
        errors["estimate"].append(estimate.value - truth)
        errors["isotonic"].append(estimate_accuracy(live["confidence"], isotonic).value - truth)
        errors["mean_confidence"].append(float(live["confidence"].mean()) - truth)
    return {
        "size": size,
        "alarms": rate(alarms, windows),
        "drifted_by_feature": by_feature,
        "estimate_below_floor": low_estimates,
        **{f"{name}_error": error_summary(values) for name, values in errors.items()},
    }


def previous_decision(reference: pd.DataFrame, live: pd.DataFrame) -> bool:
    """The baseline: the monitor's decision before 2026-12-05 (commit 6567194), rebuilt here since its code is gone.
    Evidently's DataDriftPreset at its defaults tests all six features (its method chosen by sample size) at its own
    thresholds, uncorrected; unhealthy when the predicted label drifted or half the features did (max_drift_share
    0.5)."""
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from newscat.export.reference import CATEGORICAL, FEATURES, NUMERIC

    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
    prefix = "Value Drift for column "
    with warnings.catch_warnings():  # constant features divide by zero inside Evidently
        warnings.simplefilter("ignore")
        tests = (
            Report([DataDriftPreset(columns=list(FEATURES))], include_tests=True)
            .run(
                Dataset.from_pandas(live[list(FEATURES)], data_definition=definition),
                Dataset.from_pandas(reference[list(FEATURES)], data_definition=definition),
            )
            .dict()["tests"]
        )
    drifted = {
        t["name"][len(prefix) :] for t in tests if t["name"].startswith(prefix) and str(t["status"]).endswith("FAIL")
    }
    return "label" in drifted or len(drifted) / len(FEATURES) >= 0.5


def previous_alarms(
    reference: pd.DataFrame, pool: pd.DataFrame, size: int, windows: int, rng: np.random.Generator
) -> dict[str, float | int]:
    """How often the previous decision called `windows` windows of `size` texts from `pool` unhealthy."""
    hits = sum(previous_decision(reference, pool.iloc[rng.integers(0, len(pool), size)]) for _ in range(windows))
    return rate(hits, windows)


def error_summary(signed: Sequence[float]) -> dict[str, float]:
    """Median and 90th percentile of the absolute error (accuracy points as fractions), and the mean signed one."""
    values = np.asarray(signed, dtype=np.float64)
    return {
        "median_abs": round(float(np.median(np.abs(values))), 4),
        "p90_abs": round(float(np.quantile(np.abs(values), 0.9)), 4),
        "mean_signed": round(float(values.mean()), 4),
    }


def pool_summary(frame: pd.DataFrame) -> dict[str, float | int]:
    from newscat.export.reference import CORRECT

    return {
        "rows": len(frame),
        "accuracy": round(float(frame[CORRECT].mean()), 4),
        "mean_confidence": round(float(frame["confidence"].mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models:/newscat@challenger", help="registered model URI (NAME@ALIAS)")
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--data", required=True, help="AG News directory (train.csv, test.csv, classes.txt)")
    parser.add_argument("--seed", type=int, default=42, help="the job's seed: which rows were validation")
    parser.add_argument("--sizes", default="1000,10000", help="healthy window sizes")
    parser.add_argument("--shift-size", type=int, default=1000, help="shifted window size")
    parser.add_argument("--windows", type=int, default=500, help="windows per pool and size")
    parser.add_argument(
        "--baseline-windows", type=int, default=50, help="windows per pool and size for the previous decision"
    )
    parser.add_argument("--cache", default="/tmp/newscat-monitor-alarms", help="where answers are cached per model")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args()

    import mlflow

    from newscat.config import DataConfig
    from newscat.data.load import load_news
    from newscat.data.text import join_fields
    from newscat.monitoring.drift import ALPHA, EFFECT_FLOOR, TESTS
    from newscat.monitoring.live import read_reference
    from newscat.monitoring.monitor import resolve_version
    from newscat.registry.tags import VersionTags
    from newscat.registry.versions import version_model_id
    from newscat.tracking.models import load_recorded

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    began = time.perf_counter()
    version = resolve_version(args.model.removeprefix("models:/"))
    model_id = version_model_id(version)
    data = load_news(DataConfig(source=args.data), seed=args.seed)
    names = data.label_names
    test = raw_rows(Path(args.data) / "test.csv", names)
    train = raw_rows(Path(args.data) / "train.csv", names)
    test["text"] = [join_fields(t, d) for t, d in zip(test["title"], test["description"], strict=True)]
    assert test["text"].tolist() == data.test["text"].tolist(), "the test split is not the one newscat reads"

    scorer = load_recorded(f"models:/{model_id}").unwrap_python_model().scorer  # its recorded path, whatever NEWSCAT_*
    # The answers depend on the model, the data and the seed (which rows are validation, the shifted draws).
    cache = (
        Path(args.cache)
        / f"{model_id}-{hashlib.sha256(str(Path(args.data).resolve()).encode()).hexdigest()[:8]}-{args.seed}"
    )
    rng = np.random.default_rng(args.seed)
    pools = {
        "reference": answered(scorer, data.validation[["text", "label"]], cache / "reference.parquet"),
        "healthy": answered(scorer, test[["text", "label"]], cache / "healthy.parquet"),
    }
    for name, rows in shifted_texts(test, train, rng).items():
        pools[name] = answered(scorer, rows, cache / f"{name}.parquet")
    scored_s = time.perf_counter() - began
    reference = pools.pop("reference")
    logged = read_reference(model_id)
    gap = None
    if logged is not None and len(logged) == len(reference):
        gap = float(np.abs(np.sort(logged["confidence"]) - np.sort(reference["confidence"])).max())

    healthy = pools["healthy"]
    for index, name in enumerate(names):
        true = test["label"].to_numpy() == index
        pools[f"no_{name}"] = healthy[~true].reset_index(drop=True)
        pools[f"only_{name}"] = healthy[true].reset_index(drop=True)

    began = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    test_accuracy = VersionTags.from_tags(version.tags).test_metrics.get("accuracy")
    result = {
        "benchmark": "monitor_alarms",
        **provenance(),
        "model": args.model,
        "model_id": model_id,
        "version": str(version.version),
        "test_accuracy": test_accuracy,
        "decision": {
            "alpha": ALPHA,
            "tests": TESTS,
            "per_test_alpha": ALPHA / len(TESTS),
            "effect_floor": EFFECT_FLOOR,
            "max_drift_share": MonitorConfig().max_drift_share,
            "prediction_drift": MonitorConfig().prediction_drift,
            "estimate_floor": None if test_accuracy is None else test_accuracy - MonitorConfig().max_accuracy_drop,
        },
        "reference": {
            **pool_summary(reference),
            "source": f"the {len(reference)} validation rows (seed {args.seed})",
            "logged_rows": None if logged is None else len(logged),
            "max_confidence_gap_to_logged": gap,
        },
        "pools": {name: pool_summary(frame) for name, frame in pools.items()},
        "healthy": {
            str(size): judge_windows(reference, healthy, size, args.windows, rng, test_accuracy) for size in sizes
        },
        "shifted": {
            name: judge_windows(reference, frame, args.shift_size, args.windows, rng, test_accuracy)
            for name, frame in pools.items()
            if name != "healthy"
        },
        "seconds": {"scoring_or_cache": round(scored_s, 1), "windows": round(time.perf_counter() - began, 1)},
    }
    # The baseline in the same run, on the same pools, with its own random windows (the figures above stay put).
    began, baseline_rng = time.perf_counter(), np.random.default_rng(args.seed + 1)
    result["previous_decision"] = {
        "rule": previous_decision.__doc__.split("\n\n")[0].replace("\n", " "),
        "healthy": {
            str(size): previous_alarms(reference, healthy, size, args.baseline_windows, baseline_rng) for size in sizes
        },
        "shifted": {
            name: previous_alarms(reference, frame, args.shift_size, args.baseline_windows, baseline_rng)
            for name, frame in pools.items()
            if name != "healthy"
        },
    }
    result["seconds"]["previous_decision"] = round(time.perf_counter() - began, 1)
    text = json.dumps(result, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
