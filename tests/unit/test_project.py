"""The project files agree with each other: conda.yaml vs pyproject, MLproject vs the CLI, README vs CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from newscat.cli import main
from newscat.config import TUNE_OPTIONS

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].lower()


def test_conda_yaml_and_pyproject_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(dep["pip"] for dep in conda["dependencies"] if isinstance(dep, dict))
    deps = {_name(r): r for r in project["dependencies"]}
    # The environment `mlflow run` builds serves every entry point: `-e monitor` needs the monitor extra (Evidently,
    # and the pandas it works with, which replaces the bare pandas requirement).
    deps |= {_name(r): r for r in project["optional-dependencies"]["monitor"]}
    conda_deps = {_name(r): r for r in pip}
    assert set(deps) == set(conda_deps)
    for name, requirement in deps.items():
        if name == "torch":
            assert conda_deps[name] == "torch==2.13.0"  # pinned: a bare torch pulls a CUDA build
        else:
            assert conda_deps[name] == requirement
    assert pip[0] == "torch==2.13.0"


def test_mlproject_parameters_are_the_declared_options() -> None:
    """MLproject's parameters and its command are checked against the one declaration (`TUNE_OPTIONS`)."""
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    assert spec["conda_env"] == "conda.yaml"
    main_entry = spec["entry_points"]["main"]
    params = set(main_entry["parameters"])
    declared = {option.name: option for option in TUNE_OPTIONS if option.mlproject}
    assert params == {*declared, "config"}
    command = main_entry["command"]
    assert command.startswith("python -m newscat tune")
    flags = dict((p, f) for f, p in re.findall(r"(--[a-z0-9-]+) \{([a-z0-9_]+)\}", command))
    assert flags == {**{name: option.flag for name, option in declared.items()}, "config": "--config"}
    help_text = CliRunner().invoke(main, ["tune", "--help"], terminal_width=200).output
    for option in TUNE_OPTIONS:
        assert option.flag in help_text and f"[default: {option.default_text()}]" in help_text, option.name
    # Unset by default, so that `-P config=file.yaml` is not overridden by MLproject defaults.
    assert {name: spec["default"] for name, spec in main_entry["parameters"].items()} == dict.fromkeys(params, "")


@pytest.mark.parametrize(
    ("entry", "flags"),
    [
        ("monitor", {"since": "--since", "experiment": "--experiment", "config": "--config"}),
        ("retrain", {"since": "--since", "promote": "--promote", "config": "--config"}),
    ],
)
def test_the_loop_entry_points_pass_each_parameter_to_a_flag_of_their_command(entry: str, flags: dict) -> None:
    spec = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"][entry]
    command = spec["command"]
    assert command.startswith(f"python -m newscat {entry} {{model}}")
    found = dict((p, f) for f, p in re.findall(r"(--[a-z0-9-]+) \{([a-z0-9_]+)\}", command))
    assert found == flags and set(spec["parameters"]) == {"model", *flags}
    help_text = CliRunner().invoke(main, [entry, "--help"], terminal_width=200).output
    assert all(flag in help_text for flag in flags.values())
    # '' is "not set" for every flag, so a config file's sections are not overridden by MLproject defaults.
    assert all(spec["parameters"][name]["default"] == "" for name in flags)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"<!-- test-command -->\s*```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    assert command in (ROOT / ".ci" / "run").read_text()
