from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from newscat.cli import main


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["tune"],
        ["promote"],
        ["rollback"],
        ["audit"],
        ["evaluate"],
        ["check"],
        ["predict"],
        ["feedback"],
        ["monitor"],
        ["retrain"],
    ],
)
def test_every_command_explains_itself(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 5


def test_bad_data_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\nonly one,a\n")
    result = CliRunner().invoke(main, ["tune", "--data", str(tmp_path), "--storage", f"sqlite:///{tmp_path}/o.db"])
    assert result.exit_code == 1
    assert "single class" in result.output
    assert not (tmp_path / "o.db").exists()  # nothing was started


def test_frozen_layers_the_model_cannot_take_fail_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import write_ag_news_dir

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    source = write_ag_news_dir(tmp_path / "data", n_train=5, n_test=1)
    (tmp_path / "c.yaml").write_text("train:\n  frozen_layers: 6\n")
    args = [
        "tune",
        "--config",
        str(tmp_path / "c.yaml"),
        "--data",
        str(source),
        "--storage",
        f"sqlite:///{tmp_path}/o.db",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "frozen_layers=6: the encoder has 6 layers; keep at least one training" in result.output
    assert "at most 5" in result.output
    assert not (tmp_path / "o.db").exists()  # no study was started


def test_unknown_config_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("tune:\n  n_trails: 3\n")
    result = CliRunner().invoke(main, ["tune", "--config", str(path)])
    assert result.exit_code == 1 and "unknown config key 'tune.n_trails'" in result.output


def test_promote_and_rollback_name_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    result = CliRunner().invoke(main, ["promote", "newscat", "--to", "champion"])
    assert result.exit_code == 1 and "registered model 'newscat' has no alias 'challenger'" in result.output
    result = CliRunner().invoke(main, ["promote", "newscat", "--version", "3"])
    assert result.exit_code == 1 and "has no version 3" in result.output
    result = CliRunner().invoke(main, ["rollback", "newscat"])
    assert result.exit_code == 1 and "no 'previous-champion' to roll back to" in result.output


def test_predict_reports_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("headline\nhello\n")
    result = CliRunner().invoke(main, ["predict", "models:/x/1", "-i", str(path)])
    assert result.exit_code == 1 and "no column 'text'" in result.output


def test_mlproject_style_empty_values_leave_the_config_file_in_charge(tmp_path: Path) -> None:
    """`mlflow run` passes every parameter, unset ones as ''; they must not override the config file."""
    (tmp_path / "train.csv").write_text("text,label\nonly one,a\n")
    config = tmp_path / "c.yaml"
    config.write_text("tune:\n  pruner: bogus\n")  # reaches config validation only if '' flags stay unset
    empty = ["--n-trials", "", "--timeout", "", "--max-epochs", "", "--pruner", "", "--precision", "", "--seed", ""]
    result = CliRunner().invoke(main, ["tune", "--config", str(config), "--data", str(tmp_path), *empty])
    assert result.exit_code == 1
    assert "pruner must be median, racing, halving, hyperband or none, got 'bogus'" in result.output
    bad = CliRunner().invoke(main, ["tune", "--n-trials", "four"])
    assert bad.exit_code == 2 and "'four' is not a valid integer" in bad.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["check", "models:/nosuch/1"], "nosuch"),
        (["evaluate", "models:/nosuch/1"], "is not a registered version: pass --data"),
        (["evaluate", "runs:/abc/model", "--data", "/no/such/dir"], "/no/such/dir"),
        (["predict", "models:/nosuch/1", "-i", "-"], "nosuch"),
    ],
)
def test_every_command_answers_bad_input_with_a_message_not_a_traceback(
    args: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    result = CliRunner().invoke(main, args, input="a headline\n")
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output and expected in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not an escaped exception


@pytest.mark.parametrize("command", ["tune", "retrain", "promote"])
def test_every_choice_takes_the_words_users_type(command: str) -> None:
    """Click matches enum members by their names (`AUTO`), users type values (`auto`, as in `-P promote=auto`):
    every choice must accept its own value and give back that plain word."""
    cli = main.commands[command]
    ctx = click.Context(cli)
    checked = 0
    for param in cli.params:
        kind = getattr(param.type, "inner", param.type)  # OrUnset wraps the choice
        for word in getattr(kind, "choices", ()):
            assert type(word) is str and param.type.convert(word, param, ctx) == word, (param.name, word)
            checked += 1
    assert checked
