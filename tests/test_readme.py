"""The README a newcomer reads first: short (issue 24: at most 200 lines, the rest on the docs site), and every
link and picture in it found where it points, as ``mkdocs build --strict`` checks the site's own pages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading: lower case, punctuation dropped, spaces as -."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (a line opening with # outside a fenced block: a shell comment is none)."""
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("#"):
            found.add(anchor(line.lstrip("#")))
    return found


def test_the_readme_stays_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move detail to docs/, keep the key figures"


def test_every_link_and_picture_in_the_readme_is_found():
    links = [target for target in LINK.findall(README.read_text()) if not re.match(r"[a-z]+://", target)]
    assert len(links) > 20  # the docs pages, the pictures, the anchors below them
    broken = []
    for target in links:
        path, _, fragment = target.partition("#")
        page = ROOT / path
        if not page.is_file() or (fragment and fragment not in anchors(page)):
            broken.append(target)
    assert not broken, f"links in README.md that point at nothing: {broken}"


def test_anchors_are_read_as_mkdocs_makes_them():
    assert anchor("The default view's resolution") == "the-default-views-resolution"
    beside = "beside-anomalib-on-the-screws-and-the-ball-screws"
    assert anchor("Beside anomalib on the screws and the ball screws") == beside
    assert "latency-build-by-build" in anchors(ROOT / "docs" / "results.md")
    assert not any("inspection_id" in a for a in anchors(README))  # the query's answer, a comment in a code block


def test_the_docs_site_s_front_page_lists_the_pages_as_the_readme_does():
    """The README's table of pages and the docs site's front page (``docs/index.md``) say the same, each link from
    its own folder: two copies of one list, kept equal here rather than left to drift."""

    def rows(page: Path, prefix: str) -> list[str]:
        return [line.replace(f"]({prefix}", "](") for line in page.read_text().splitlines() if line.startswith("| [")]

    listed = rows(README, "docs/")
    assert len(listed) == len(list((ROOT / "docs").glob("*.md"))) - 1  # every page but the front page itself
    assert rows(ROOT / "docs" / "index.md", "") == listed
