"""What an MLflow error means to newscat: something that does not exist (an answer), a refusal (401/403, which the
CLI explains), or the store failing (an outage, an error 500) which stops the command and says what to do.

Only the first may be read as "not there": an unreachable server must never look like "no champion yet".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from newscat.errors import NewscatError

MISSING = "RESOURCE_DOES_NOT_EXIST"  # what the sqlite/SQL stores and the REST server say for a missing run/version
# What to do after a failed request of a command that changed nothing yet.
RERUN = (
    "Nothing was changed. Make sure the server is running and answers (its log says why a request failed), then "
    "rerun the same command."
)
# What to do after a failure in the middle of `newscat tune`.
RESUME = "Start it (or fix it) and rerun the same command: the study resumes where it stopped."

P = ParamSpec("P")
R = TypeVar("R")


class TrackingError(NewscatError):
    """The tracking store failed a request (unreachable, an error 500): the message names it and what to do."""


def is_missing(exc: MlflowException) -> bool:
    """Whether the store answered that the run, model or version asked for does not exist."""
    return exc.error_code == MISSING


def is_refusal(exc: MlflowException) -> bool:
    """A server's 401/403: the CLI says which credentials or permission to set (`cli.server_refusal`)."""
    return exc.get_http_status_code() in (401, 403)


def is_outage(exc: MlflowException) -> bool:
    """The store did not answer or failed on its side (connection refused, timeouts, HTTP 5xx, a broken database)."""
    return exc.get_http_status_code() >= 500


def store_name(uri: str | None = None) -> str:
    """`the tracking server at URL` or `the tracking store URI`, for messages."""
    uri = uri or mlflow.get_tracking_uri()
    return f"the tracking server at {uri}" if uri.startswith(("http://", "https://")) else f"the tracking store {uri}"


def failure_message(exc: MlflowException, action: str, then: str, uri: str | None = None) -> str:
    """What failed, which store, MLflow's own words, and what to do."""
    return f"{action} failed: {store_name(uri)} did not answer it ({exc.message}). {then}"


def raise_failure(
    exc: MlflowException,
    action: str,
    *,
    then: str = RERUN,
    error: type[NewscatError] = TrackingError,
    uri: str | None = None,
) -> NoReturn:
    """Re-raise an error that is not an answer: a refusal as it is, anything else as `error` saying what to do."""
    if is_refusal(exc):
        raise exc
    raise error(failure_message(exc, action, then, uri)) from exc


def explain_outages(action: str, then: str = RESUME) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a command's body: a store outage anywhere inside it ends it as a TrackingError saying what to do.

    Other MLflow errors (refusals, bad requests) pass unchanged.
    """

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except MlflowException as exc:
                if is_outage(exc):
                    raise TrackingError(failure_message(exc, action, then)) from exc
                raise

        return wrapped

    return wrap
