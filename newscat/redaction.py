"""Passwords out of everything newscat writes: URLs keep their shape, their secrets become `***`.

The real URL is still what connects (Optuna, SQLAlchemy, MLflow); only text meant for people or for a store
(params, tags, cards, reports, log lines, error messages) goes through `redact_url`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

MASK = "***"

# `scheme://user:password@host`: the password ends at the first `@`, as SQLAlchemy's URL parser reads it (so an
# unencoded `/` or `:` in it is still covered). Works inside longer text too: error messages quote URLs.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<secret>[^@\s]+)(?=@)")
# `?password=...` / `&sslpassword=...` in a query string, and libpq's `password=...` keyword form; the value ends
# where a query parameter, a quote or a backtick does (URLs are quoted in messages and cards).
_KEYWORD = re.compile(
    r"(?P<head>(?:^|(?<=[?&;\s]))(?:password|passwd|pwd|sslpassword)=['\"]?)(?P<secret>[^&#;\s'\"`]+)",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """`text` (a URL, or any text quoting URLs) with every password replaced by `***`; anything else as is."""
    if not isinstance(text, str):  # callers format params of any type; only strings can hold a URL
        return text
    text = _USERINFO.sub(lambda m: m["head"] + MASK, text)
    return _KEYWORD.sub(lambda m: m["head"] + MASK, text)


def redact_values(values: Mapping[str, str]) -> dict[str, str]:
    """A flat mapping (params, tags) with every value redacted."""
    return {key: redact_url(value) for key, value in values.items()}


def mask_passwords_in_output() -> None:
    """From now on, what the process prints carries no password: every log record (newscat's, MLflow's, Optuna's,
    whichever handler prints it), and every line written to stdout or stderr — warnings, tracebacks, and what
    libraries print themselves (MLflow writes a run's URL, built from the tracking URI). Installing it twice is
    harmless."""
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "redacts", False):
        logging.setLogRecordFactory(_redacting_factory(previous))
    if not isinstance(sys.stdout, MaskedStream):
        sys.stdout = MaskedStream(sys.stdout)
    if not isinstance(sys.stderr, MaskedStream):
        sys.stderr = MaskedStream(sys.stderr)


class MaskedStream:
    """A text stream that writes through another one with passwords masked; everything else is the other's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_url(text))
        return len(text)  # what the caller gave: callers count their own characters

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _redacting_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed logging call: leave it to logging, which reports it when it formats it
            return record
        masked = redact_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters reuse exc_text when set: the messages in the traceback (a URL in an error) are masked too.
            record.exc_text = redact_url(logging.Formatter().formatException(record.exc_info))
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    return factory
