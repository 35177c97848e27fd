"""The package's shape, read from its source: imports point down the pipeline's stages, no file or package imports
itself back through others, the served model ships every module its code imports, each package's face names what
others use, and Optuna's and MLflow's private attributes are touched in one adapter only."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from importlib import import_module
from pathlib import Path

import pytest

from newscat.serving.artifacts import SHIPPED_CODE

PACKAGE = Path(__file__).resolve().parents[2] / "newscat"
# The stages from the bottom up: a module may import its own stage and any stage with a lower rank, never one of
# the same rank (siblings) or above. The main job (training) sits above the release it ends with; monitoring above
# the retrain's training; the CLI on top.
RANKS = {
    "newscat": 0,  # the package's own face (__version__)
    "errors": 1,
    "names": 1,
    "faces": 1,
    "logs": 1,
    "redaction": 1,
    "locks": 1,
    "processes": 1,
    "evaluation": 2,
    "config": 2,
    "data": 3,
    "serving": 4,
    "export": 5,
    "tracking": 6,
    "registry": 7,
    "release": 8,
    "batch": 8,
    "training": 9,
    "monitoring": 10,
    "cli": 11,
    "__main__": 12,
}
ADAPTER = "newscat/serving/mlflow_internals.py"  # the one module allowed to use MLflow's private API
PRIVATE = re.compile(
    r"\._storage\b|\._trial_id\b|from (mlflow|optuna)[\w.]* import (\(\s*)?_\w+|\b(mlflow|optuna)(\.\w+)*\._[a-z]\w*"
    r"|_client\._\w+|client\._\w+|store\)?\._\w+"
)


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    return {_module(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> Iterator[tuple[str, str, int]]:
    """(module, imported name or '', line) of every newscat import in `path`, top-level or not."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("newscat"):
            for alias in node.names:
                yield node.module, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("newscat"):
                    yield alias.name, "", node.lineno


def _target(module: str, name: str) -> str:
    """The newscat module an import reads: `from newscat.a import b` reads newscat.a.b where b is a module."""
    sources = _sources()
    return f"{module}.{name}" if f"{module}.{name}" in sources else module


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _edges() -> Iterator[tuple[str, str, int]]:
    for module, path in _sources().items():
        for imported, name, line in _imports(path):
            yield module, _target(imported, name), line


def test_every_module_stands_on_a_stage() -> None:
    assert {_stage(module) for module in _sources()} <= set(RANKS)


def test_imports_point_down_the_stages() -> None:
    upward = [
        f"{module}:{line} imports {target}"
        for module, target, line in _edges()
        if _stage(module) != _stage(target) and RANKS[_stage(module)] <= RANKS[_stage(target)]
    ]
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_back_through_others() -> None:
    graph: dict[str, set[str]] = {module: set() for module in _sources()}
    for module, target, _ in _edges():
        if target != module and not module.startswith(f"{target}."):  # a submodule reading its package's face
            graph[module].add(target)
    assert not _cycles(graph)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["c", "b", "a"]]
    assert not _cycles({"a": {"b"}, "b": set()})


def test_the_release_stage_has_no_file_over_300_lines() -> None:
    lengths = {path.name: len(path.read_text().splitlines()) for path in (PACKAGE / "release").glob("*.py")}
    assert lengths and max(lengths.values()) <= 300, lengths


def test_the_served_model_ships_every_newscat_module_its_code_imports() -> None:
    shipped = {
        _module(path)
        for entry in SHIPPED_CODE
        for path in ([PACKAGE / entry] if entry.endswith(".py") else (PACKAGE / entry).rglob("*.py"))
    }
    missing = [
        f"{module}:{line} imports {target}"
        for module, target, line in _edges()
        if module in shipped and target not in shipped
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()))
def test_other_packages_use_only_names_a_package_s_face_offers(package: str) -> None:
    offered = set(import_module(f"newscat.{package}").__all__)
    assert offered, f"newscat/{package}/__init__.py names nothing in __all__"
    outside = [
        f"{module}:{line} uses {imported}.{name}"
        for module, path in _sources().items()
        if _stage(module) != package
        for imported, name, line in _imports(path)
        if _stage(imported) == package and _target(imported, name) == imported and name not in offered
    ]
    assert not outside, "\n".join(outside)


def test_optuna_and_mlflow_privates_are_used_in_one_adapter_only() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in _sources().values()
        if str(path.relative_to(PACKAGE.parent)) != ADAPTER
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line) and not line.lstrip().startswith("#")
    ]
    assert not found, "\n".join(found)


def test_the_private_use_pattern_sees_what_it_is_for() -> None:
    for line in (
        "study._storage.get_trial(trial._trial_id)",
        "from mlflow.store.artifact.utils.models import _parse_model_uri",
        "self._client._upload_trace_data(info, data)",
        "mlflow.tracing.utils._something()",
    ):
        assert PRIVATE.search(line), line
    assert not PRIVATE.search("self._client.start_trace(info)")
