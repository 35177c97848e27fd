"""Passwords masked in URLs and in text quoting them; everything else untouched; a process prints none."""

from __future__ import annotations

import subprocess
import sys

import pytest

from newscat.redaction import redact_url, redact_values


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://newscat:s3cret@127.0.0.1/test", "postgresql://newscat:***@127.0.0.1/test"),
        ("postgresql+psycopg://u:s3cret@db.example:5432/optuna", "postgresql+psycopg://u:***@db.example:5432/optuna"),
        ("mysql+pymysql://root:s3cret@h/db?charset=utf8mb4", "mysql+pymysql://root:***@h/db?charset=utf8mb4"),
        ("http://alice:s3cret@tracking.example:5000", "http://alice:***@tracking.example:5000"),
        ("https://alice:s%40cr%2Fet@host/path", "https://alice:***@host/path"),  # percent-encoded characters
        ("postgresql://u:s3/cr:et@h/db", "postgresql://u:***@h/db"),  # unencoded / and :, as SQLAlchemy reads it
        ("postgresql://u@h/db?password=s3cret", "postgresql://u@h/db?password=***"),
        (
            "postgresql://u@h/db?sslmode=require&PASSWORD=s3cret&x=1",
            "postgresql://u@h/db?sslmode=require&PASSWORD=***&x=1",
        ),
        ("host=h user=u password=s3cret dbname=test", "host=h user=u password=*** dbname=test"),  # libpq keywords
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert redact_url(url) == masked
    assert redact_url(masked) == masked  # masking twice changes nothing


def test_urls_quoted_in_text_are_masked_where_they_stand() -> None:
    text = "cannot open storage 'postgresql://u:s3cret@h/db': bad; also http://a:pw2@b:5000 failed"
    assert redact_url(text) == "cannot open storage 'postgresql://u:***@h/db': bad; also http://a:***@b:5000 failed"


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:///optuna.db",
        "sqlite:////tmp/dir with space/optuna.db",
        "postgresql://postgres@127.0.0.1:5432/test",  # a user name is not a secret
        "http://127.0.0.1:5000",
        "http://host:5000/path?run=1",
        "models:/newscat@champion",
        "runs:/0123/model",
        "fancyzhx/ag_news",
        "../shared/data/ag_news",
        "alice:bob@example",  # no scheme: not a URL
        "ratio 3:2 @ noon",
        "",
    ],
)
def test_text_without_a_password_is_unchanged(text: str) -> None:
    assert redact_url(text) == text


def test_values_of_a_mapping_are_masked_and_keys_kept() -> None:
    values = {"tune.storage": "postgresql://u:s3cret@h/db", "seed": "42"}
    assert redact_values(values) == {"tune.storage": "postgresql://u:***@h/db", "seed": "42"}


def test_a_process_prints_no_password_in_logs_warnings_or_tracebacks() -> None:
    """`newscat`'s CLI installs the masking once; then every way a process prints text is covered, also a logger
    whose handler holds the stderr of before (as MLflow's, configured when it is imported)."""
    script = """
import logging, sys, warnings
early = logging.getLogger("mlflow.store")
early.addHandler(logging.StreamHandler(sys.stderr))
early.propagate = False
from newscat.redaction import mask_passwords_in_output
mask_passwords_in_output()
logging.basicConfig(format="%(name)s %(message)s")
logging.getLogger("mlflow.store").warning("store %s", "postgresql://u:s3cret@h/db")
logging.getLogger("optuna").warning("storage http://a:s3cret@h")
try:
    raise ValueError("inner postgresql://u:s3cret@h/db")
except ValueError:
    logging.getLogger("newscat").exception("failed")
warnings.warn("tracking uri http://a:s3cret@h", UserWarning)
print("View run at: http://a:s3cret@h/#/experiments/1")  # as MLflow prints a run's URL, with sys.stdout.write
raise RuntimeError("cannot reach postgresql://u:s3cret@h/db")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "s3cret" not in output, output
    for line in (
        "store postgresql://u:***@h/db",
        "optuna storage http://a:***@h",
        "ValueError: inner postgresql://u:***@h/db",
        "UserWarning: tracking uri http://a:***@h",
        "View run at: http://a:***@h/#/experiments/1",
        "RuntimeError: cannot reach postgresql://u:***@h/db",
    ):
        assert line in output, output
