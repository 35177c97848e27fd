"""The study's report: Optuna's plots (HTML and PNG) and a table of every trial, for the study's parent run."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
import pandas as pd

log = logging.getLogger("newscat")

# name -> Optuna plot; each exists as plotly (HTML) and matplotlib (PNG).
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, params, value, best value so far, duration in seconds."""
    rows, best = [], None
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
            best = trial.value if best is None else max(best, trial.value)
        duration = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start
            else None
        )
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                **{f"param_{k}": v for k, v in trial.params.items()},
                "value": trial.value,
                "best_so_far": best,
                "duration_s": None if duration is None else round(duration, 1),
            }
        )
    return pd.DataFrame(rows)


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
    parts.append("<h2>trials</h2>" + trials_table(study).to_html(index=False, na_rep=""))
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
