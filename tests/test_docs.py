"""The repository explains itself: what its files cite is inside it.

The method and the results contract used to live in documents outside the repository, which a
fresh clone cannot open; docs/method.md and docs/contract.md replace them. These checks read
every file git would commit (tracked, or new and not ignored), so a stale reference fails here
before it reaches a clone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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
