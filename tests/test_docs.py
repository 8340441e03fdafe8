"""The repository explains itself: what its files cite is inside it.

The method and the results contract used to live in documents outside the repository, which a
fresh clone cannot open; docs/method.md and docs/contract.md replace them. These checks read
every file git would commit (tracked, or new and not ignored), so a stale reference fails here
before it reaches a clone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The outside documents by name, and the folder they lived in (the data folder beside it,
#: ``../shared/data``, is data, not a document, and may be named).
OUTSIDE_DOCUMENT = re.compile(r"\b(?:METHOD|CONTRACT)\.md\b|shared/reference/")
#: A path into docs/ as files write it: ``docs/method.md``.
DOCS_PATH = re.compile(r"\bdocs/[\w./-]*?\.md\b")
#: A section cited by its title: ``docs/method.md, "GLUE (Table 1) settings"``.
DOCS_SECTION = re.compile(r"\b(docs/[\w./-]*?\.md),\s*\"([^\"]+)\"")
#: A relative Markdown link target: ``[text](contract.md)``, ``[text](../README.md#usage)``.
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_texts() -> dict[str, str]:
    """``{path relative to the root: text}`` for every text file git would commit."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the files of the repository cannot be listed")
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    texts = {}
    for name in filter(None, listing.split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a binary file cites nothing
            continue
    return texts


def occurrences(pattern: re.Pattern[str], texts: dict[str, str]) -> list[tuple[str, int, str]]:
    """``(file, line number, match)`` for every match of ``pattern``."""
    return [
        (name, number, match.group(0))
        for name, text in texts.items()
        for number, line in enumerate(text.splitlines(), start=1)
        for match in pattern.finditer(line)
    ]


def headings(path: Path) -> set[str]:
    return {
        line.lstrip("#").strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def test_the_project_documents_exist() -> None:
    for name in ("method.md", "contract.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


def test_no_file_cites_a_document_outside_the_repository() -> None:
    # docs/ may tell the history; this file names the patterns it looks for.
    this_file = str(Path(__file__).resolve().relative_to(ROOT))
    texts = {
        name: text
        for name, text in repository_texts().items()
        if not name.startswith("docs/") and name != this_file
    }
    found = occurrences(OUTSIDE_DOCUMENT, texts)
    assert not found, "cite docs/method.md or docs/contract.md instead:\n" + "\n".join(
        f"  {name}:{number}: {match}" for name, number, match in found
    )


def test_every_cited_docs_path_exists() -> None:
    texts = repository_texts()
    missing = [
        (name, number, match)
        for name, number, match in occurrences(DOCS_PATH, texts)
        if not (ROOT / match).is_file()
    ]
    assert not missing, "cited, but not in docs/:\n" + "\n".join(
        f"  {name}:{number}: {match}" for name, number, match in missing
    )


def test_every_cited_docs_section_exists() -> None:
    texts = repository_texts()
    missing = []
    for name, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            for match in DOCS_SECTION.finditer(line):
                doc, title = match.groups()
                if (ROOT / doc).is_file() and title not in headings(ROOT / doc):
                    missing.append(f"  {name}:{number}: {doc} has no heading {title!r}")
    assert not missing, "cited sections that do not exist:\n" + "\n".join(missing)


def test_links_between_documents_resolve() -> None:
    broken = []
    for name, text in repository_texts().items():
        if not name.endswith(".md"):
            continue
        base = (ROOT / name).parent
        for number, line in enumerate(text.splitlines(), start=1):
            for target in MARKDOWN_LINK.findall(line):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue  # a URL or an anchor in the same file
                if not (base / target.split("#")[0]).exists():
                    broken.append(f"  {name}:{number}: {target}")
    assert not broken, "Markdown links to files that do not exist:\n" + "\n".join(broken)


def test_the_contracts_example_has_the_keys_its_command_writes(tmp_path) -> None:
    """docs/contract.md shows "a real one": the results.json of its command, shortened only
    inside ``task_config`` and ``fingerprint.task``. A key added to results.json must reach it."""
    from tests.helpers import run_in_process

    text = (DOCS / "contract.md").read_text(encoding="utf-8")
    example = json.loads(re.search(r"A real one.*?```json\n(.*?)```", text, re.S).group(1))
    written = run_in_process(tmp_path, "task=bof", "rank=1", "omega=200", "preset=smoke")
    assert list(example) == list(written)
    assert example["fingerprint"].keys() == written["fingerprint"].keys()
    assert example["fingerprint"]["lowrank"] == written["fingerprint"]["lowrank"]
    # The example was written on one machine; fp32 training on another CPU or library build
    # may round its last bits differently (a 1.2e-7 relative move of train/loss was seen on a
    # second machine: one float32 ulp). rel=1e-5 allows a few ulps carried through the smoke's
    # steps, while any real change to training (data, loss, rate) moves these values far more.
    assert example["metrics"].keys() == written["metrics"].keys()
    assert example["metrics"] == pytest.approx(written["metrics"], rel=1e-5)
    assert example["omega_per_layer"] == written["omega_per_layer"]


# --- Links resolve on a code host, with their anchors; the site builds from the same files. ---

FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code blocks, code spans blanked."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append((number, re.sub(r"`+[^`]*`+", lambda m: " " * len(m.group(0)), line)))
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation dropped (letters of
    any script, digits, ``_`` and ``-`` kept), each space a hyphen. mkdocs.yml's slugify
    (``pymdownx.slugs``, lower case) gives the same, so one anchor serves both."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, as GitHub numbers repeated ones (``-1``, ...)."""
    found: dict[str, int] = {}
    result = set()
    text = path.read_text(encoding="utf-8")
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not heading:
            continue
        anchor = github_anchor(heading.group(1))
        count = found.get(anchor, 0)
        found[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def test_links_resolve_with_their_anchors_on_a_code_host() -> None:
    """A link's file exists (test_links_between_documents_resolve) and its ``#anchor`` is a
    heading of that file as GitHub anchors it; `make docs` checks the same links in the site."""
    broken = []
    for name, text in repository_texts().items():
        if not name.endswith(".md"):
            continue
        for number, line in prose_lines(text):
            for target in MARKDOWN_LINK.findall(line):
                if re.match(r"[a-z]+:", target) or "#" not in target:
                    continue
                path, anchor = target.split("#", 1)
                file = (ROOT / name).parent / path if path else ROOT / name
                if file.suffix == ".md" and file.is_file() and anchor not in anchors(file):
                    broken.append(f"  {name}:{number}: {target}")
    assert not broken, "links to anchors that are no heading of their file:\n" + "\n".join(broken)


def test_the_anchor_rule_is_githubs() -> None:
    assert github_anchor("Why a learnt ω cannot find the sweep's ω") == (
        "why-a-learnt-ω-cannot-find-the-sweeps-ω"
    )
    assert github_anchor("theory: Figures 2–3") == "theory-figures-23"
    assert github_anchor("`auto`, learnt, or a sweep: which to use") == (
        "auto-learnt-or-a-sweep-which-to-use"
    )


def test_the_readme_is_a_short_tour() -> None:
    """Issue #39: at most 200 lines, the two commands in the first 30, a Findings section."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"
    first = "\n".join(lines[:30])
    assert "make demo" in first and "make test" in first
    assert "## Findings" in lines


def test_the_readmes_python_compiles() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")


def nav_pages() -> set[str]:
    """The docs/ pages mkdocs.yml's nav names (read as text: the file holds a Python tag)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return set(re.findall(r"^\s*-\s+(?:[^:\n]*:\s+)?([\w./-]+\.md)\s*$", nav, re.M))


def test_every_page_of_docs_is_in_the_sites_nav() -> None:
    pages = {
        str(path.relative_to(DOCS))
        for path in DOCS.rglob("*.md")
        if path.name != "README.md"  # docs/'s index on a code host; the site's home is README
    }
    listed = nav_pages()
    assert pages - listed == set(), "pages of docs/ missing from mkdocs.yml's nav"
    generated = {"index.md"} | {page for page in listed if page.startswith("repository/")}
    assert listed - pages - generated == set(), "nav names pages docs/ does not have"


@pytest.mark.slow
def test_the_site_builds_in_strict_mode(tmp_path) -> None:
    """`make docs`: every link and anchor checked, any warning an error; the API pages hold
    the functions and classes their modules' docstrings describe."""
    pytest.importorskip("mkdocs", reason="the dev extra installs mkdocs")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr[-4000:]
    assert "WARNING" not in build.stderr
    api = {
        "apply": ["sinelr.apply.apply_lowrank", "sinelr.apply.densify"],
        "peft": ["sinelr.peft.SineLoraConfig"],
        "layers": ["sinelr.layers.base.register_lowrank", "sinelr.layers.config.LowRankConfig"],
    }
    for page, names in api.items():
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        for name in names:
            assert f'id="{name}"' in html, f"api/{page} has no entry for {name}"
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="tasks/bof/"' in home and 'href="usage/#the-sine-trick-in-your-own-model"' in home
