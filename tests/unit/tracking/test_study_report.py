from __future__ import annotations

import re

import optuna

from newscat.tracking.study_report import PLOTS, html_report, png_figures, trials_table


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
        batch = trial.suggest_categorical("batch_size", [16, 32])
        for step in (1, 2):
            trial.report(lr * 100 * step, step)
        if trial.number == 3:
            raise optuna.TrialPruned()
        return lr * 100 + batch / 1000

    study.optimize(objective, n_trials=5)
    return study


def test_trials_table_has_one_row_per_trial_with_running_best() -> None:
    table = trials_table(_study())
    assert table["number"].tolist() == [0, 1, 2, 3, 4]
    assert table.loc[3, "state"] == "PRUNED" and table["state"].tolist().count("COMPLETE") == 4
    assert {"param_learning_rate", "param_batch_size", "value", "best_so_far", "duration_s"} <= set(table.columns)
    complete = table[table["state"] == "COMPLETE"]
    assert complete["best_so_far"].is_monotonic_increasing
    assert complete["best_so_far"].iloc[-1] == complete["value"].max()


def test_html_has_every_plot_once_with_plotly_embedded_once() -> None:
    page = html_report(_study())
    for name in PLOTS:
        assert f"<h2>{name}</h2>" in page
    assert page.count("<h2>") == len(PLOTS) + 1 and "class='missing'" not in page
    # One call per figure (a figure's call passes its div id; the library's own text mentions `Plotly.newPlot(gd`).
    assert len(re.findall(r'Plotly\.newPlot\(\s*"', page)) == len(PLOTS)
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # the library itself, embedded once


def test_png_figures_and_a_one_trial_study() -> None:
    assert set(png_figures(_study())) == set(PLOTS)
    single = optuna.create_study()
    single.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    page = html_report(single)  # a plot Optuna cannot draw is said in the page, never raised
    assert all(f"<h2>{name}</h2>" in page for name in PLOTS)
