"""MkDocs hooks: one set of Markdown files that reads the same on a code host and in the site.

The files link as a code host reads them: README.md links ``docs/omega.md``, a page of docs/
links ``../benchmarks/RESULTS.md``. The site is built from docs/ alone, so these hooks

- make the repository's README.md the site's home page (``index.md``);
- give every file outside docs/ that a page links to a page of its own under ``repository/``:
  a Markdown file as it is (``repository/benchmarks/RESULTS.md``), any other text file as a code
  block (``repository/src/sinelr/paper_numbers.yaml.md``);
- rewrite each link to where its target is in the site;
- drop the Sphinx roles of docstrings (``:func:`apply_lowrank```) in the API reference, which
  mkdocstrings renders as code but would print the role beside it.

MkDocs then checks every rewritten link and anchor (``validation`` in mkdocs.yml; ``--strict``
turns each warning into a failure), so a link that resolves in the site resolves on a code host
too, and the other way round. A link into a folder has no page to go to and is reported.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path, PurePosixPath

from mkdocs.structure.files import File, Files, InclusionLevel

log = logging.getLogger("mkdocs.plugins.sinelr")

ROOT = Path(__file__).resolve().parents[1]
DOCS = "docs"
#: Where a page for a file outside docs/ goes in the site.
REPOSITORY = "repository"
#: An inline link or image target: ``[text](target)``, ``![alt](target "title")``.
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^\s*(```|~~~)")
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
#: A Sphinx role before rendered code: ``:func:<code>``, ``:attr:<code>~pkg.Class.name``.
ROLE = re.compile(r":(?:py:)?(?:func|meth|attr|class|data|mod|exc|obj):(<code>)(?:~(?:\w+\.)*)?")
LANGUAGES = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml"}

#: ``{site src_uri: path in the repository}`` for every page; set by on_files.
SOURCES: dict[str, str] = {}


def prose_segments(markdown: str):
    """``(text, is_prose)`` pieces of ``markdown``: fenced blocks and code spans are not prose."""
    in_fence = False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line):
            in_fence = not in_fence
            yield line, False
            continue
        if in_fence:
            yield line, False
            continue
        for number, piece in enumerate(re.split(r"(`+[^`]*`+)", line)):
            yield piece, number % 2 == 0


def link_targets(markdown: str) -> list[str]:
    """Every relative link target in the prose of ``markdown`` (URLs and ``#anchors`` left out)."""
    return [
        match.group(2)
        for text, prose in prose_segments(markdown)
        if prose
        for match in LINK.finditer(text)
        if not URL.match(match.group(2)) and not match.group(2).startswith("#")
    ]


def resolve(source: str, target: str) -> str:
    """The repository path that ``target``, written in the repository file ``source``, names."""
    path = target.split("#", 1)[0]
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), path))


def site_uri(path: str) -> str:
    """The site's src_uri for the repository path ``path``."""
    if path == "README.md":
        return "index.md"
    if path.startswith(DOCS + "/"):
        return path[len(DOCS) + 1 :]
    if path.endswith(".md"):
        return f"{REPOSITORY}/{path}"
    return f"{REPOSITORY}/{path}.md"


def repository_page(path: str) -> str:
    """The Markdown of the site's page for the repository file ``path`` (outside docs/)."""
    text = (ROOT / path).read_text(encoding="utf-8")
    if path.endswith(".md"):
        return text
    fence = "````" if "```" in text else "```"
    language = LANGUAGES.get(PurePosixPath(path).suffix, "text")
    return f"# `{path}`\n\n{fence}{language}\n{text}{fence}\n"


def on_files(files: Files, config) -> Files:
    SOURCES.clear()
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    SOURCES["index.md"] = "README.md"
    pending = ["README.md"]
    for file in files.documentation_pages():
        if file.src_uri != "index.md":
            SOURCES[file.src_uri] = f"{DOCS}/{file.src_uri}"
            pending.append(SOURCES[file.src_uri])
    seen = set(pending)
    while pending:  # the pages of linked files link on in turn
        source = pending.pop()
        for target in link_targets((ROOT / source).read_text(encoding="utf-8")):
            path = resolve(source, target)
            if path in seen or path.startswith(DOCS + "/") or not (ROOT / path).is_file():
                continue  # docs/ is in the site already; a missing file is MkDocs' to report
            seen.add(path)
            uri = site_uri(path)
            page = File.generated(
                config, uri, content=repository_page(path), inclusion=InclusionLevel.NOT_IN_NAV
            )
            files.append(page)
            SOURCES[uri] = path
            if path.endswith(".md"):
                pending.append(path)
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    source = SOURCES.get(page.file.src_uri)
    if source is None:
        return markdown
    here = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(2)
        if URL.match(target) or target.startswith("#"):
            return match.group(0)
        path = resolve(source, target)
        if (ROOT / path).is_dir():
            log.warning("%s links the folder %s: link a file in it", source, target)
            return match.group(0)
        anchor = target[len(target.split("#", 1)[0]) :]
        relative = posixpath.relpath(site_uri(path), here or ".")
        return f"{match.group(1)}{relative}{anchor}{match.group(3)}"

    return "".join(
        LINK.sub(rewrite, text) if prose else text for text, prose in prose_segments(markdown)
    )


def on_page_content(html: str, page, config, files) -> str:
    if not page.file.src_uri.startswith("api/"):
        return html
    return ROLE.sub(r"\1", html)
