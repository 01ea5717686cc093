"""The docs a newcomer reads: every relative link resolves, the README stays a short guide, and no paragraph
stands in two of README.md and docs/ (each fact has one home, the others link to it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from devhost.processes import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def markdown_files() -> list[Path]:
    """The repository's own Markdown (what git tracks, or would: not venvs, node_modules or logs)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return sorted(ROOT / name for name in listed if (ROOT / name).exists())


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {anchor(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_and_anchor_in_the_markdown_resolves() -> None:
    broken = []
    for path in markdown_files():
        for target in LINK.findall(FENCE.sub("", path.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, fragment = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_short_guide_linking_to_the_reference() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    for doc in ("docs/api.md", "docs/configuration.md", "docs/architecture.md", "docs/benchmarks.md",
                "requests.http"):
        assert f"]({doc}" in text, f"README.md does not link to {doc}"


def paragraphs(path: Path) -> set[str]:
    """Paragraphs of prose and table rows, whitespace folded; headings and short lines left out."""
    text = FENCE.sub("", path.read_text())
    blocks = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    rows = [" ".join(line.split()) for line in text.splitlines() if line.startswith("| ")]
    return {b for b in blocks + rows if len(b) >= 80 and not b.startswith("#") and not b.startswith("| ---")}


def test_no_paragraph_stands_in_two_of_the_readme_and_docs() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    seen: dict[str, Path] = {}
    repeated = []
    for path in files:
        for paragraph in paragraphs(path):
            if paragraph in seen:
                repeated.append(f"{seen[paragraph].name} and {path.name}: {paragraph[:100]}…")
            seen.setdefault(paragraph, path)
    assert not repeated, "\n".join(repeated)
