"""The study's report: Optuna's plots (HTML and PNG) and a table of every trial, for the study's parent run."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import mlflow
import optuna
import pandas as pd

from newscat.redaction import redact_url, redact_values
from newscat.tracking.runs import log_metrics

log = logging.getLogger("newscat")

# name -> Optuna plot; each exists as plotly (HTML) and matplotlib (PNG).
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, params, value, best value so far, duration in seconds."""
    frame = study.trials_dataframe(attrs=("number", "state", "params", "value", "duration"))
    complete = frame["value"].where(frame["state"] == "COMPLETE")
    return pd.DataFrame(
        {
            "number": frame["number"],
            "state": frame["state"],
            **{column: frame[column] for column in frame.columns if column.startswith("params_")},
            "value": frame["value"],
            "best_so_far": complete.cummax().ffill(),
            "duration_s": frame["duration"].dt.total_seconds().round(1),
        }
    ).rename(columns=lambda c: c.replace("params_", "param_", 1))


def _plot(module: Any, name: str, study: optuna.Study) -> Any | None:
    """One plot, or None (with the reason logged) when the study cannot make it, e.g. importances of one trial."""
    make: Callable[..., Any] = getattr(module, f"plot_{name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            return make(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        log.info("study report: no %s plot (%s)", name, exc)
        return None


def html_report(study: optuna.Study) -> str:
    """One self-contained HTML page with the plotly versions of the plots and the trials table."""
    from optuna import visualization

    parts = [f"<h1>Optuna study {study.study_name}</h1>"]
    first = True
    for name in PLOTS:
        figure = _plot(visualization, name, study)
        if figure is None:
            parts.append(
                f"<h2>{name}</h2><p class='missing'>not available for this study (too few finished trials)</p>"
            )
            continue
        # The plotly library is embedded once, so the page works offline.
        parts.append(f"<h2>{name}</h2>" + figure.to_html(full_html=False, include_plotlyjs=first))
        first = False
    # The table's text, not the whole page: the embedded plotly.js is code that a pattern must not touch.
    parts.append("<h2>trials</h2>" + redact_url(trials_table(study).to_html(index=False, na_rep="")))
    return "<!doctype html><html><head><meta charset='utf-8'></head><body>" + "\n".join(parts) + "</body></html>"


def png_figures(study: optuna.Study) -> dict[str, Any]:
    """The matplotlib versions of the plots that the study can make, by name."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    from optuna.visualization import matplotlib as optuna_matplotlib

    figures = {}
    for name in PLOTS:
        axes = _plot(optuna_matplotlib, name, study)
        if axes is not None:
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figures[name] = first.get_figure()
    return figures


def log_study_report(study: optuna.Study) -> None:
    """Optuna's plots as one HTML page and as PNGs, and the trials table, under `study/` of the active run."""
    import matplotlib.pyplot as plt

    mlflow.log_text(html_report(study), "study/report.html")
    for name, figure in png_figures(study).items():
        mlflow.log_figure(figure, f"study/{name}.png")
        plt.close(figure)
    table = trials_table(study)
    mlflow.log_text(redact_url(table.to_csv(index=False)), "study/trials.csv")


def log_study_summary(counts: Mapping[str, int], best: optuna.trial.FrozenTrial) -> None:
    """Counts by state, and the best trial's number, value and params (tags: they change on resume)."""
    log_metrics({**counts, "best_value": best.value, "best_trial": best.number})
    params = redact_values({f"best.{k}": str(v) for k, v in best.params.items()})  # a categorical may be a URL
    mlflow.set_tags({"best_trial": str(best.number), **params})
