"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest

from tests.outage_servers import NO_RETRIES, answering


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fluent API pointed at a real HTTP server that answers 500 to everything."""
    for name, value in NO_RETRIES.items():
        monkeypatch.setenv(name, value)
    previous = mlflow.get_tracking_uri()
    with answering(500) as url:
        mlflow.set_tracking_uri(url)
        try:
            yield url
        finally:
            mlflow.set_tracking_uri(previous)
