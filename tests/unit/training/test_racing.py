from __future__ import annotations

import optuna
import pytest

from newscat.config import TuneConfig
from newscat.training.racing import RacingPruner
from newscat.training.study import make_pruner, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def finished(study: optuna.Study, curve: list[float]) -> None:
    """A trial that reported `curve` at evaluations 1, 2, ... and completed with its best score."""
    trial = study.ask()
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
    study.tell(trial, max(curve))


def decisions(study: optuna.Study, curve: list[float]) -> list[bool]:
    """should_prune after each report of a new trial (it goes on reporting, to see every decision)."""
    trial, out = study.ask(), []
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        out.append(trial.should_prune())
    return out


def test_prunes_only_a_trial_behind_the_leader_by_more_than_two_standard_errors() -> None:
    # Leader 0.89 on 500 rows: standard error 0.014, so the line is 0.89 - 0.028 = 0.862.
    study = optuna.create_study(direction="maximize", pruner=RacingPruner(500))
    finished(study, [0.80, 0.89])
    finished(study, [0.70, 0.85])
    assert decisions(study, [0.79, 0.87]) == [False, False]  # 0.01 and 0.02 behind: noise
    assert decisions(study, [0.79, 0.85]) == [False, True]  # 0.04 behind at the second evaluation
    assert decisions(study, [0.70, 0.90]) == [True, False]  # 0.10 behind at the first


def test_more_validation_rows_mean_a_finer_line() -> None:
    coarse, fine = (optuna.create_study(direction="maximize", pruner=RacingPruner(n)) for n in (500, 5000))
    for study in (coarse, fine):
        finished(study, [0.89])
    assert decisions(coarse, [0.87]) == [False]
    assert decisions(fine, [0.87]) == [True]  # 5,000 rows: standard error 0.0044, a 2-point gap is real


def test_a_trial_is_judged_by_its_best_score_so_far() -> None:
    study = optuna.create_study(direction="maximize", pruner=RacingPruner(500))
    finished(study, [0.80, 0.86])  # the line at the second evaluation: 0.86 - 2 x 0.0155 = 0.829
    assert decisions(study, [0.85, 0.60]) == [False, False]  # a bad evaluation after a good one is not the trial
    assert decisions(study, [0.80, 0.60]) == [False, True]


def test_nothing_is_pruned_without_a_finished_trial_at_that_evaluation() -> None:
    study = optuna.create_study(direction="maximize", pruner=RacingPruner(500, n_startup_trials=2))
    finished(study, [0.90])
    assert decisions(study, [0.10]) == [False]  # one finished trial, two needed
    finished(study, [0.90])
    assert decisions(study, [0.10, 0.10]) == [True, False]  # no finished trial reached the second evaluation


def test_keeps_the_slow_starter_the_median_pruner_stopped() -> None:
    """The 12-trial study of 2026-12-02 (benchmarks/results/2026-12-02-pruning_12trials.json): trial 5, the best
    (0.898), opened at 0.722 while the finished trials 0, 1 and 3 had opened at 0.65, 0.752 and 0.734."""
    curves = [[0.65, 0.83, 0.802, 0.872], [0.752, 0.834, 0.862, 0.89], [0.734, 0.856, 0.872, 0.888]]
    trial_5 = [0.722, 0.832, 0.862, 0.878]
    median = optuna.create_study(direction="maximize", pruner=make_pruner(TuneConfig(pruner="median"), max_evals=8))
    racing = optuna.create_study(direction="maximize", pruner=make_pruner(TuneConfig(pruner="racing"), 8, 500))
    for study in (median, racing):
        for curve in curves:
            finished(study, curve)
    assert decisions(median, trial_5)[0]
    assert decisions(racing, trial_5) == [False, False, False, False]


def test_the_study_races_on_its_validation_rows(tmp_path) -> None:
    cfg = TuneConfig(pruner="racing", study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    study = open_study(cfg, seed=0, max_evals=4, n_validation=800)
    assert isinstance(study.pruner, RacingPruner) and study.pruner.n_validation == 800


def test_racing_without_the_validation_size_is_refused() -> None:
    with pytest.raises(ValueError, match="validation set's size"):
        make_pruner(TuneConfig(pruner="racing"), max_evals=4)
    with pytest.raises(ValueError, match="validation set's size"):
        RacingPruner(0)
