"""A package's face: the names other packages may use, each read from the module that defines it on first use, so
that importing one module of a package imports nothing else of it (the served model ships only some modules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module


def face(package: str, offered: Mapping[str, Sequence[str]]) -> tuple[list[str], Callable[[str], object]]:
    """`__all__` and the module `__getattr__` (PEP 562) of `package`, whose modules (by their short name) define
    the `offered` names."""
    home = {name: module for module, names in offered.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{home[name]}"), name)

    return sorted(home), __getattr__
