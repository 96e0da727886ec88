"""Every relative link in README.md and docs/*.md points to a file that exists and, when it
names an anchor, to a heading of that file (GitHub's anchors: lower case, punctuation
dropped, spaces as dashes); and docs/README.md lists every page of docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The Markdown without its fenced blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    found = set()
    for heading in re.findall(
        r"^#{1,6} (.+)$",
        re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S),
        flags=re.M,
    ):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_anchor_rule() -> None:
    readme = anchors(ROOT / "README.md")
    assert "ab-tests-and-sticky-users" in readme
    assert "modeltoml-reference" in anchors(ROOT / "docs" / "configuration.md")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    assert not broken, broken


def test_docs_index_lists_every_page() -> None:
    listed = set(LINK.findall(prose(ROOT / "docs" / "README.md")))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages <= listed, pages - listed
    assert "docs/README.md" in LINK.findall(prose(ROOT / "README.md"))
