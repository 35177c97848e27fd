"""The README and docs stay true to the code: links resolve, every parameter is documented once, CI's command."""

from __future__ import annotations

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
