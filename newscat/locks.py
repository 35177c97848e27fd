"""Cross-process locks: a file lock (one machine) and a database session lock (any number of machines)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), held for the block; other processes wait."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def beside_sqlite(url: str) -> contextlib.AbstractContextManager[None]:
    """A file lock beside the database file of a `sqlite:///PATH` URL; no lock for other URLs (or in-memory)."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return file_lock(f"{url[len('sqlite:///') :]}.newscat-lock")
    return contextlib.nullcontext()


@contextlib.contextmanager
def database_lock(engine: Any, acquire: str, release: str, key: Any) -> Iterator[None]:
    """A database session lock (`acquire`/`release` SQL with a :key parameter) held on one connection."""
    from sqlalchemy import text

    with engine.connect() as connection:
        connection.execute(text(acquire), {"key": key})
        try:
            yield
        finally:
            connection.execute(text(release), {"key": key})
