"""The README stays a short front page, and no relative link in it or in docs/ is broken.

Relative links to docs/*.md work on GitHub and offline; `mkdocs build --strict` (make
docs-check) checks the site's links and anchors, this checks the files behind every link,
README included (it is not part of the site).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 220

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(text: str) -> list[str]:
    """Targets of the inline Markdown links outside code, minus URLs and same-page anchors."""
    text = _CODE.sub("", _FENCE.sub("", text))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        targets.append(target)
    return targets


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): reference material belongs "
        "in a page under docs/, linked from the README"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path: Path) -> None:
    broken = []
    for target in relative_links(path.read_text(encoding="utf-8")):
        file_part = unquote(target.split("#", 1)[0])
        if file_part and not (path.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_readme_links_every_docs_page() -> None:
    readme = set(relative_links((ROOT / "README.md").read_text(encoding="utf-8")))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - readme == set(), f"pages not linked from README.md: {sorted(pages - readme)}"


def test_link_finder_sees_links_and_skips_code_and_urls() -> None:
    text = (
        "[a](docs/a.md) ![b](img/b.png \"title\") [c](https://x.org/c.md) [d](#here)\n"
        "`[e](e.md)`\n```\n[f](f.md)\n```\n[g](docs/g.md#part)"
    )
    assert relative_links(text) == ["docs/a.md", "img/b.png", "docs/g.md#part"]


_REPO_PATH = re.compile(
    r"`((?:recsys|stream|serving|trainer|evaluation|shell|bench|infra|tests|docs)/[\w./-]*?)`"
)


def named_repo_paths(text: str) -> set[str]:
    """Repository paths the text names in code spans (`stream/processor.py`, `tests/stream/`)."""
    return {m for m in _REPO_PATH.findall(_FENCE.sub("", text)) if "{" not in m and "*" not in m}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_named_files_exist(path: Path) -> None:
    # The data path and the role pages walk through the code file by file: a module that moves
    # or is renamed must take its mentions along.
    missing = sorted(p for p in named_repo_paths(path.read_text(encoding="utf-8"))
                     if not (ROOT / p).exists())
    assert not missing, f"{path.relative_to(ROOT)} names files that do not exist: {missing}"


def test_named_path_finder() -> None:
    text = "`stream/processor.py`, `tests/stream/`, `{ns}:uvec`, `recsys.foldin`, `x/y.py`"
    assert named_repo_paths(text) == {"stream/processor.py", "tests/stream/"}
