"""The README and docs/ point at things that exist: every relative link resolves to a file or a
folder of the repository (relative to the page that links), and every ``#anchor`` to a heading
of its target, with GitHub's heading ids. The README's map of where each behaviour lives is made
of such links, so moving a module without updating the map fails here. External links are not
fetched. The README stays a first read: at most 8 KiB, with the two commands at the top."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 8192

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](target) or [text](target "title"); the text may hold one level of brackets.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose(text: str) -> str:
    """The page without its fenced code blocks (lines blanked, so line numbers hold)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    return "\n".join(lines)


def slug(heading: str) -> str:
    """GitHub's id for a heading: the rendered text, lowercased, without punctuation but ``-``
    and ``_``, each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "").lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every id a link may point at in ``page``: its headings (a repeated one gets ``-1``,
    ``-2``, ... as on GitHub) and explicit HTML anchors."""
    seen: dict[str, int] = {}
    ids = set()
    text = prose(page.read_text(encoding="utf-8"))
    for line in text.split("\n"):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    ids.update(HTML_ANCHOR.findall(text))
    return ids


def links(page: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every link in the page's prose; code blocks and code spans are text."""
    text = prose(page.read_text(encoding="utf-8"))
    # Blank code spans but keep their newlines, so that line numbers hold.
    text = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    for match in LINK.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(1)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the page's relative links, one line each; empty when all resolve."""
    problems = []
    for line, target in links(page):
        where = f"{page.relative_to(root)}:{line}: {target}"
        if not target:
            problems.append(f"{where}: empty link")
            continue
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not path.is_relative_to(root):
            problems.append(f"{where}: outside the repository")
        elif not path.exists():
            problems.append(f"{where}: no such file or folder")
        elif anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path):
            problems.append(f"{where}: no heading #{anchor} in {path.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


#: A cell of a table's delimiter row (``|---|:--:|``).
DELIMITER_CELL = re.compile(r"^\s*:?-{3,}:?\s*$")


def reflowed_tables(page: Path) -> list[str]:
    """Lines with a table's delimiter row mixed with other text or cells: the table was
    reflowed into a paragraph and no longer renders."""
    found = []
    for number, line in enumerate(prose(page.read_text(encoding="utf-8")).split("\n"), 1):
        cells = line.strip().strip("|").split("|")
        delimiters = [bool(DELIMITER_CELL.match(cell)) for cell in cells]
        if "|" in line and any(delimiters) and not all(delimiters):
            found.append(f"{page.name}:{number}: {line.strip()[:60]}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_tables_are_tables(page: Path) -> None:
    assert reflowed_tables(page) == []


def test_a_reflowed_table_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n\ntext | a | b | |---|---| | 1 | 2 |\n")
    assert reflowed_tables(page) == ["page.md:5: text | a | b | |---|---| | 1 | 2 |"]


def test_the_pages_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/architecture.md", "docs/reliability.md"} <= names


def test_readme_is_a_first_read() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_bytes()) <= README_MAX_BYTES
    top = "\n".join(readme.read_text(encoding="utf-8").split("\n")[:40])
    assert "make run" in top
    assert "make test" in top


# A page named in code, comments or the Makefile, with an optional section after it:
# ``docs/architecture.md, "Lock order"``.
POINTER = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b(?:,? \"([^\"]+)\")?")
POINTING_FILES = ["Makefile", ".env.example", "pyproject.toml", ".ci/run"]
POINTING_DIRS = ["controlplane", "clusters", "registries", "tests", "scripts", "deploy"]


def pointers(root: Path = ROOT) -> Iterator[tuple[str, int, str, str | None]]:
    """(file, line, page, section) of every Markdown page named outside the docs."""
    files = [root / name for name in POINTING_FILES if (root / name).is_file()]
    for folder in POINTING_DIRS:
        files += sorted(p for p in (root / folder).rglob("*") if p.is_file() and p.suffix in
                        {".py", ".html", ".txt", ""} and "__pycache__" not in p.parts)  # fmt: skip
    for path in files:
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            for match in POINTER.finditer(line):
                yield path.relative_to(root).as_posix(), number, match.group(1), match.group(2)


def stale_pointers(root: Path = ROOT) -> list[str]:
    """Pages named in code that do not exist (from the repository's root, from docs/, or next to
    the file that names them), or whose named section is not one of their headings."""
    problems = []
    for name, line, page, section in pointers(root):
        where = f"{name}:{line}: {page}"
        found = [p for p in (root, root / "docs", (root / name).parent) if (p / page).is_file()]
        if not found:
            problems.append(f"{where}: no such page")
            continue
        target = found[0] / page
        if section and slug(section) not in anchors(target):
            problems.append(f"{where}: no section {section!r}")
    return problems


def test_pages_named_in_code_exist() -> None:
    """Docstrings and comments that send the reader to a page (``see docs/reliability.md``) or
    to a section of one (``docs/architecture.md, "Lock order"``) send them somewhere real."""
    problems = stale_pointers()
    assert not problems, "\n".join(problems)


def test_the_checker_reports_what_does_not_resolve(tmp_path: Path) -> None:
    """The link check itself can fail: a missing file, a missing heading, a link out of the
    repository; and it does not take links in code for links."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Same\n\n## Same\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title: the `first` one\n\n"
        "[ok](docs/other.md#same-1) [ok](src/) [ok](#title-the-first-one) [ok](https://x.invalid/)\n"
        "[gone](src/gone.py) [bad anchor](docs/other.md#same-2)\n"
        "[out](../elsewhere.md) `[code](nowhere.md)`\n\n"
        "```\n[fenced](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, root=tmp_path) == [
        "README.md:4: src/gone.py: no such file or folder",
        "README.md:4: docs/other.md#same-2: no heading #same-2 in docs/other.md",
        "README.md:5: ../elsewhere.md: outside the repository",
    ]


def test_the_pointer_check_reports_what_does_not_resolve(tmp_path: Path) -> None:
    """The check of pages named in code can fail: a page that is not there, a section that is
    not one of its headings."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "clusters").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Lock order\n", encoding="utf-8")
    (tmp_path / "clusters" / "locks.py").write_text(
        '"""See docs/guide.md, "Lock order", and guide.md."""\n'
        '# Listed in DESIGN.md; see docs/guide.md, "The main flow".\n',
        encoding="utf-8",
    )
    assert stale_pointers(tmp_path) == [
        "clusters/locks.py:2: DESIGN.md: no such page",
        "clusters/locks.py:2: docs/guide.md: no section 'The main flow'",
    ]
