"""The docs: the MkDocs site builds strictly, and every link from the README and the site resolves.

`mkdocs build --strict` (with every `validation` check of mkdocs.yml set to warn) fails on a link to
a missing page, a missing anchor, or a page left out of the nav. MkDocs cannot see files outside
docs/, so the links it does not check are checked here: the README's and bench/README.md's relative
links, and the site's links into the repository (`https://github.com/kubeinfer/kubeinfer/blob/main/...`).
Manifests shown in the docs must pass the same validation as `kubeinfer validate`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from kubeinfer_api import reference
from kubeinfer_api.validation import parse_manifest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
REPO_URL = re.compile(r"^https://github\.com/kubeinfer/kubeinfer/(?:blob|tree)/main/([^#?]+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
README_MAX_LINES = 300


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def links(path: Path) -> list[str]:
    """Link targets of a markdown file, outside code blocks."""
    return LINK.findall(FENCE.sub("", path.read_text()))


def anchors(path: Path) -> set[str]:
    """Heading ids as MkDocs' toc (and, for plain headings, GitHub) makes them."""
    return {slugify(heading.replace("`", ""), "-") for heading in HEADING.findall(FENCE.sub("", path.read_text()))}


def broken_relative_links(path: Path) -> list[str]:
    """Relative links of `path` to files or anchors that do not exist."""
    broken = []
    for target in links(path):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
            broken.append(target)
    return broken


def test_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "reference" / "fields" / "index.html").exists()


def test_every_page_is_in_the_nav() -> None:
    """Said by the strict build too; here the message names the page and the fix."""
    nav = (REPO / "mkdocs.yml").read_text()
    missing = [str(p.relative_to(DOCS)) for p in pages() if str(p.relative_to(DOCS)) not in nav]
    assert missing == [], f"add these pages to nav in mkdocs.yml: {missing}"


def test_readme_is_a_short_front_door() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, "move the detail into docs/ and link it"


@pytest.mark.parametrize("name", ["README.md", "bench/README.md"])
def test_relative_links_resolve(name: str) -> None:
    assert broken_relative_links(REPO / name) == []


def test_links_into_the_repository_resolve() -> None:
    """MkDocs leaves absolute URLs alone: a link to a moved example or source file would rot."""
    missing = []
    for page in [*pages(), REPO / "README.md", REPO / "bench" / "README.md"]:
        for target in links(page):
            match = REPO_URL.match(target)
            if match and not (REPO / match.group(1)).exists():
                missing.append(f"{page.relative_to(REPO)}: {target}")
    assert missing == []


def test_link_checker_catches_what_it_should(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n## Sub part\n[ok](#sub-part) [ok](b.md#b) [bad](#nope) [bad](c.md)\n")
    (tmp_path / "b.md").write_text("# B\n```\n[in code](ignored.md)\n```\n")
    assert broken_relative_links(tmp_path / "a.md") == ["#nope", "c.md"]


def test_manifests_in_the_docs_are_valid() -> None:
    checked = 0
    for page in [REPO / "README.md", *pages()]:
        for block in re.findall(r"^```yaml\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL):
            doc = yaml.safe_load(block)
            if isinstance(doc, dict) and doc.get("kind") == "DistributedInference":
                parse_manifest(doc)
                checked += 1
    assert checked >= 2, "the README's first job and the task page's job"


def test_field_reference_is_generated_from_the_models() -> None:
    assert reference.main(["--check"]) == 0, "docs/reference/fields.md is stale: run `make docs` (or `make crds`)"


def test_every_spec_field_has_a_description() -> None:
    assert reference.undocumented() == [], "give these fields a description= in api/kubeinfer_api/spec.py"


@pytest.mark.parametrize(("node", "expected"), [
    ({"type": "integer", "minimum": 1, "maximum": 64}, "integer, 1 … 64"),
    ({"type": "integer", "minimum": 0}, "integer ≥ 0"),
    ({"type": "string", "enum": ["a", "b"]}, "`a` \\| `b`"),
    ({"type": "string", "maxLength": 253}, "string (≤ 253)"),
    ({"type": "array", "maxItems": 16, "items": {"type": "object", "properties": {"name": {}}}},
     "list of `{name}` (≤ 16)"),
    ({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": True}}, "map string → quantity"),
])
def test_field_types_are_rendered_from_the_schema(node: dict[str, object], expected: str) -> None:
    assert reference.type_of(node) == expected
