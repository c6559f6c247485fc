"""Every relative link in the project's Markdown documents reaches a file, and every
``#anchor`` a heading of that file (as GitHub renders headings into anchors)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    p
    for p in ROOT.glob("**/*.md")
    if not any(part.startswith(".") or part == "node_modules" for part in p.relative_to(ROOT).parts)
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache  # a document is read once, however many links point into it
def anchors(path: Path) -> frozenset[str]:
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(anchor(line.lstrip("#")))
    return frozenset(found)


def test_anchors_follow_githubs_rule():
    assert anchor("How the detector works (`edge_agent/detector.py`)") == (
        "how-the-detector-works-edge_agentdetectorpy"
    )
    assert anchor("What knowing the EV's power gains (1.17)") == (
        "what-knowing-the-evs-power-gains-117"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path):
    broken = []
    for target in LINK.findall(document.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, fragment = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no such heading")
    assert not broken, broken
