"""Release: a study's final weights become the registered model. The serving paths are gated and the lexical
companion fitted (on validation and training texts only), the test split scored once, the release model logged,
loaded back and checked, described (card, tags) and registered; a registration cut short is resumed.

Below training (which calls `release_best`), above export, registry, tracking, evaluation, serving and data.
Names are imported lazily, so that importing one submodule does not import the whole stage.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newscat.release.context import ReleaseContext, Weights
    from newscat.release.publish import Release, release_best, resume_release
    from newscat.release.verify import ReleaseError

__all__ = ["Release", "ReleaseContext", "ReleaseError", "Weights", "release_best", "resume_release"]
_HOMES = {
    "Release": "publish",
    "ReleaseContext": "context",
    "ReleaseError": "verify",
    "Weights": "context",
    "release_best": "publish",
    "resume_release": "publish",
}


def __getattr__(name: str) -> Any:
    """PEP 562: a public name, imported from its submodule on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
