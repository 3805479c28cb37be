"""The documentation holds together: links resolve, nothing points outside the repository.

Checks every relative link (and its #anchor) of README.md and docs/*.md, every
`docs/<page>.md#<anchor>` reference in code, configs, scripts and tests, and
that no file names a document the repository does not contain.
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))),
        os.path.join(ROOT, "study", "README.md"),
        *sorted(glob.glob(os.path.join(ROOT, "study", "docs", "*.md")))]
# Generated or bulky folders of a working copy: not part of the repository's text.
_SKIP_DIRS = {".git", "build", "dist", "runs", "data", "__pycache__", ".pytest_cache",
              ".ruff_cache"}
_TEXT_EXT = {".py", ".md", ".cfg", ".sh", ".txt", ".toml", ".yml", ".yaml", ".json", ".ini", ""}

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~)")
# Markdown links ("](docs/x.md)") are relative to their page: the link test checks them.
_DOCS_REF = re.compile(r"(?<!\]\()((?:study/)?docs)/([A-Za-z0-9_\-]+\.md)(#[A-Za-z0-9_\-]+)?")


def _repo_text_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs
                   if d not in _SKIP_DIRS and not d.startswith(".venv") and not d.endswith(
                       ".egg-info")]
        for name in files:
            if os.path.splitext(name)[1] in _TEXT_EXT:
                yield os.path.join(folder, name)


def _prose_lines(path):
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if _FENCE.match(line.strip()):
                fenced = not fenced
            elif not fenced:
                lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    """The anchors of a Markdown file's headings (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def test_slug_follows_github():
    assert slug("What goes wrong with the paper's rule from scratch, and what fixes it") == (
        "what-goes-wrong-with-the-papers-rule-from-scratch-and-what-fixes-it")
    assert slug("1. Get the data") == "1-get-the-data"
    assert slug("`--sampler` and metrics.json") == "--sampler-and-metricsjson"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(doc):
    broken = []
    for line in _prose_lines(doc):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(doc), file_part)) \
                if file_part else doc
            if not os.path.exists(path):
                broken.append(f"{target}: no file {os.path.relpath(path, ROOT)}")
            elif anchor and path.endswith(".md") and anchor not in anchors(path):
                broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(path, ROOT)}")
    assert not broken, f"{os.path.relpath(doc, ROOT)}: {broken}"


def test_docs_references_in_the_code_resolve():
    broken = []
    for path in _repo_text_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for folder, page, anchor in set(_DOCS_REF.findall(text)):
            target = os.path.join(ROOT, folder, page)
            if not os.path.isfile(target):
                broken.append(f"{os.path.relpath(path, ROOT)}: {folder}/{page}")
            elif anchor and anchor[1:] not in anchors(target):
                broken.append(f"{os.path.relpath(path, ROOT)}: {folder}/{page}{anchor}")
    assert not broken


def test_no_file_names_a_document_outside_the_repository():
    # Built from pieces so that this file does not name them itself.
    outside = ["METHOD" + ".md", "DESIGN" + ".md", "seed/" + "README.txt", "../" + "shared",
               "/work/" + "shared"]
    found = []
    for path in _repo_text_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        found += [f"{os.path.relpath(path, ROOT)}: {name}" for name in outside if name in text]
    assert not found
