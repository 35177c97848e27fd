"""The storage URL from NEWSCAT_STORAGE (defaults <- file <- environment <- flags); flat params without passwords."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from newscat.cli import main
from newscat.config import Config, build_config, overrides_from_environment

SECRET_URL = "postgresql://newscat:s3cret@127.0.0.1/test"


def test_environment_sits_between_the_config_file_and_the_flags() -> None:
    file_values = {"tune": {"storage": "sqlite:///from-file.db"}}
    environ = {"NEWSCAT_STORAGE": "sqlite:///from-env.db"}
    assert build_config(environ=environ).tune.storage == "sqlite:///from-env.db"
    assert build_config(file_values, environ=environ).tune.storage == "sqlite:///from-env.db"
    flags = {"tune.storage": "sqlite:///from-flag.db"}
    assert build_config(file_values, flags, environ=environ).tune.storage == "sqlite:///from-flag.db"
    # A flag left unset (MLproject passes '' -> None) does not hide the environment.
    assert build_config(file_values, {"tune.storage": None}, environ=environ).tune.storage == "sqlite:///from-env.db"


def test_an_empty_or_missing_variable_is_not_set() -> None:
    assert overrides_from_environment({"NEWSCAT_STORAGE": ""}) == {}
    assert overrides_from_environment({"OTHER": "x"}) == {}
    assert build_config(environ={"NEWSCAT_STORAGE": ""}) == Config()
    assert build_config() == Config()  # without `environ` the environment is not read


def test_flat_params_keep_the_url_but_not_its_password() -> None:
    cfg = build_config(environ={"NEWSCAT_STORAGE": SECRET_URL}, overrides={"data.source": "https://u:pw9@h/x.csv"})
    assert cfg.tune.storage == SECRET_URL  # the real URL connects
    flat = cfg.to_flat_dict()
    assert flat["tune.storage"] == "postgresql://newscat:***@127.0.0.1/test"
    assert flat["data.source"] == "https://u:***@h/x.csv"
    assert not any("s3cret" in value or "pw9" in value for value in flat.values())


def test_the_cli_reads_the_variable_and_prints_no_password(
    tmp_path: Path, ag_news_dir: Path, tracking_uri: str
) -> None:
    """`newscat tune` opens the storage named by NEWSCAT_STORAGE (over the config file's); its error names the URL
    masked."""
    config = tmp_path / "config.yaml"
    config.write_text(f"train:\n  work_dir: {tmp_path / 'work'}\ntune:\n  storage: nosuchdb://from-the-file\n")
    unreachable = "postgresql://newscat:s3cret@127.0.0.1:1/test"  # port 1: refused at once
    args = ["tune", "--data", str(ag_news_dir), "--max-length", "16", "--config", str(config)]
    result = CliRunner().invoke(main, args, env={"NEWSCAT_STORAGE": unreachable})
    assert result.exit_code == 1, result.output
    assert "cannot open Optuna storage 'postgresql://newscat:***@127.0.0.1:1/test'" in result.output
    assert "s3cret" not in result.output
