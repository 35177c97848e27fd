"""The README and docs stay true to the code: links resolve, every parameter is documented once, CI's command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from newscat.config import TUNE_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading slugs of a markdown page, plus explicit `<a id=...>` anchors."""
    text = page.read_text(encoding="utf-8")
    slugs = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        slugs.add(slug)
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here (no network)
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_stays_short_and_keeps_the_test_command_marker() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 220
    assert re.search(r"<!-- test-command -->\s*```bash\npython -m pytest\n```", readme)


def test_the_parameter_table_lists_every_mlproject_parameter_with_its_default() -> None:
    table = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \|", table, re.M))
    declared = {option.name: option for option in TUNE_OPTIONS if option.mlproject}
    assert set(rows) == {*declared, "config"}
    for name, option in declared.items():
        default = option.default_text()
        assert default in rows[name] or rows[name].strip() == "not set", (name, rows[name], default)


RESULTS = re.compile(r"(?:benchmarks/)?results/([\w.-]+\.json)")
PROVENANCE_KEYS = ("cpu", "date", "commit", "command")  # what benchmarks/provenance.py writes into every result
COMMIT = re.compile(r"[0-9a-f]{40}(\+dirty)?")


def _cited_results() -> dict[str, set[str]]:
    """Every results file a page names, with the pages that name it."""
    cited: dict[str, set[str]] = {}
    for page in PAGES:
        for name in RESULTS.findall(page.read_text(encoding="utf-8")):
            cited.setdefault(name, set()).add(str(page.relative_to(ROOT)))
    return cited


def test_every_cited_results_file_exists_and_says_where_its_figures_come_from() -> None:
    """A figure's results file names the CPU, date, commit and command of its run: written by the script
    (benchmarks/provenance.py), or, for runs from before the scripts recorded them, in a `provenance` block that
    says it was added by hand."""
    cited = _cited_results()
    assert len(cited) >= 5  # the pattern still finds the docs' citations
    missing, bare = [], []
    for name, pages in sorted(cited.items()):
        path = ROOT / "benchmarks" / "results" / name
        if not path.is_file():
            missing.append(f"{name} (named in {', '.join(sorted(pages))})")
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        by_hand = result.get("provenance", {})
        if by_hand.get("added_by_hand") and all(by_hand.get(key) for key in PROVENANCE_KEYS):
            continue
        if not all(result.get(key) for key in PROVENANCE_KEYS) or not COMMIT.fullmatch(result["commit"]):
            bare.append(name)
    assert not missing, f"results files named in the docs but absent: {missing}"
    assert not bare, f"results files without cpu/date/commit/command (benchmarks/provenance.py): {bare}"


def test_every_results_file_is_cited_somewhere() -> None:
    on_disk = {path.name for path in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert on_disk <= set(_cited_results()), f"results files no page names: {sorted(on_disk - set(_cited_results()))}"
