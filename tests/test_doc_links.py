"""Every relative link of README.md and docs/*.md resolves: the file exists, and a ``#anchor``
names a heading of the page it points to (GitHub's anchors: lower case, punctuation dropped,
spaces to hyphens, ``-1``, ``-2`` ... for repeated headings)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set

from tests.helpers import ROOT

PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def github_anchor(heading: str) -> str:
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)      # a link's text only
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path, cache: Dict[Path, Set[str]] = {}) -> Set[str]:
    if page not in cache:
        seen: Dict[str, int] = {}
        found = set()
        for line in FENCE.sub("", page.read_text()).splitlines():
            match = re.match(r"#{1,6}\s+(.*)", line)
            if match:
                anchor = github_anchor(match.group(1))
                count = seen.get(anchor, 0)
                seen[anchor] = count + 1
                found.add(anchor if count == 0 else f"{anchor}-{count}")
        found |= set(re.findall(r'<a (?:name|id)="([^"]+)"', page.read_text()))
        cache[page] = found
    return cache[page]


def broken_links(page: Path, root: Path = ROOT) -> List[str]:
    problems = []
    for target in _links_of(page):
        if re.match(r"[a-z]+:", target):          # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            problems.append(f"{page.relative_to(root)}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{page.relative_to(root)}: {target}: no such heading")
    return problems


def test_every_relative_link_and_anchor_resolves():
    problems = [p for page in PAGES for p in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_anchor_rule(tmp_path):
    assert github_anchor("The learnt model") == "the-learnt-model"
    assert github_anchor("`agcam evaluate`: one run, one report") == \
        "agcam-evaluate-one-run-one-report"
    page = tmp_path / "a.md"
    page.write_text("# Top\n## Top\n```\n# not a heading\n```\n[x](#top-1) [y](#not-a-heading)\n")
    assert anchors(page) == {"top", "top-1"}
    assert broken_links(page, tmp_path) == ["a.md: #not-a-heading: no such heading"]


def _links_of(page: Path) -> List[str]:
    return [m.group(1) or m.group(2) for m in LINK.finditer(FENCE.sub("", page.read_text()))]
