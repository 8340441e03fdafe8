"""The results log keeps its runs: benchmarks/RESULTS.md (the index) and benchmarks/results/.

Issue #39 split one long RESULTS.md into a file per subject. A split, or any later edit, could
drop the sentence that says where a run's results.json lie, or cite a directory that was never
committed; a section added to a subject file could be left out of the index that the code's
"RESULTS §N" citations go through. These checks read the files as text.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "benchmarks" / "RESULTS.md"
LOG = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs"

#: A cited path into the runs, as the log writes it: in a code span, a command or prose.
RUN_PATH = re.compile(r"benchmarks/runs/[^\s`)'\"|;]*")
#: A component that stands for directories: ``<dir>``, ``<commit>``, ``$W``, ``omega=null,*``.
PLACEHOLDER = re.compile(r"[<$*]")
#: A shell brace list: ``sst2_{omega,learnt,sweep}``.
BRACES = re.compile(r"\{([^{}]*)\}")
#: A numbered section heading: ``## 17. Equal tuning budget``, ``### 15.5 NeRF: ...``.
SECTION = re.compile(r"^#{2,4} (\d+(?:\.\d+)?)[. ]")


def log_texts() -> dict[str, str]:
    files = [INDEX, *sorted(LOG.glob("*.md"))]
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in files}


def cited_run_paths() -> list[tuple[str, str, bool]]:
    """``(file, path, is_destination)`` for each cited path; a destination is a directory a
    command is told to write (``W=benchmarks/runs/...``), which a plan names before its runs."""
    return [
        (name, match.group(0).rstrip(".,:"), text[: match.start()].endswith("="))
        for name, text in log_texts().items()
        for match in RUN_PATH.finditer(text)
    ]


def expansions(path: str) -> list[str]:
    """``path`` with its brace lists expanded, each cut before its first placeholder."""
    parts = BRACES.split(path)
    choices = [part.split(",") if i % 2 else [part] for i, part in enumerate(parts)]
    expanded = ["".join(pieces) for pieces in itertools.product(*choices)]
    return [
        "/".join(itertools.takewhile(lambda c: not PLACEHOLDER.search(c), p.split("/")))
        for p in expanded
    ]


def test_every_run_directory_is_cited_by_the_log() -> None:
    cited = " ".join(path for _, path, _ in cited_run_paths())
    uncited = [
        run.name
        for run in sorted(RUNS.iterdir())
        if run.is_dir() and not re.search(rf"benchmarks/runs/{re.escape(run.name)}(/|\s|$)", cited)
    ]
    assert not uncited, f"run directories no section of the log cites: {uncited}"


def test_every_run_path_the_log_cites_exists() -> None:
    missing = [
        f"  {name}: {path}"
        for name, path, destination in cited_run_paths()
        if not destination
        for prefix in expansions(path)
        if not (ROOT / prefix).exists()
    ]
    assert not missing, "cited, but not under benchmarks/runs/:\n" + "\n".join(missing)


def test_the_expansion_keeps_what_can_be_checked() -> None:
    assert expansions("benchmarks/runs/glue_0e659ac/sst2_{omega,learnt}") == [
        "benchmarks/runs/glue_0e659ac/sst2_omega",
        "benchmarks/runs/glue_0e659ac/sst2_learnt",
    ]
    assert expansions("benchmarks/runs/eb_6c1388a/<cell>/") == ["benchmarks/runs/eb_6c1388a"]
    assert expansions("benchmarks/runs/t/omega=null,*") == ["benchmarks/runs/t"]


def test_every_section_of_the_log_is_in_the_index() -> None:
    """Code and docs cite "RESULTS §N": the index must send each number to its file."""
    index = INDEX.read_text(encoding="utf-8")
    absent = []
    for path in sorted(LOG.glob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            section = SECTION.match(line)
            if section and not re.search(
                rf"^\| {re.escape(section.group(1))} \|.*\]\(results/{path.name}#", index, re.M
            ):
                absent.append(f"  §{section.group(1)} ({path.name})")
    assert not absent, "sections the index of benchmarks/RESULTS.md does not list:\n" + "\n".join(
        absent
    )


def test_the_index_links_every_subject_file_and_nothing_else() -> None:
    index = INDEX.read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(results/([\w.-]+\.md)", index))
    assert linked == {path.name for path in LOG.glob("*.md")}
