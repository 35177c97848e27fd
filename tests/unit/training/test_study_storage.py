"""A storage that cannot be opened is named in the error without its password."""

from __future__ import annotations

import pytest

from newscat.config import ConfigError, TuneConfig
from newscat.training.study import open_study


@pytest.mark.parametrize(
    ("storage", "shown"),
    [
        ("postgresql://newscat:s3cret@127.0.0.1:1/test", "'postgresql://newscat:***@127.0.0.1:1/test'"),  # refused
        ("nosuchdb://newscat:s3cret@h/db", "'nosuchdb://newscat:***@h/db'"),  # not a storage Optuna knows
    ],
)
def test_the_storage_error_masks_the_password(storage: str, shown: str) -> None:
    with pytest.raises(ConfigError, match="cannot open Optuna storage") as raised:
        open_study(TuneConfig(storage=storage, heartbeat_interval=0), seed=0, max_evals=2)
    assert shown in str(raised.value)
    assert "s3cret" not in str(raised.value)
