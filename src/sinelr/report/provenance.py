"""Where a cell's runs ran: the commit, the machine and the precision of each, read from
results.json's ``provenance`` (written by :mod:`sinelr.provenance`), and whether a cell pools
runs that differ in one of them.

The same seed gives the same metric bit for bit only on one machine, at one commit and
precision: a CPU without native bf16 trains in fp32, and an fp32 run moves by an ulp on another
CPU. A cell pooling such runs mixes that difference into its spread, so the report names what
it pools and ``scripts/report.py --strict-provenance`` refuses it. A run from before
``provenance`` existed is ``unknown`` in each: unknown runs do not differ among themselves,
but do differ from a known one (nothing says they are the same).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from sinelr.report.model import MIXED_MARK, omega_text
from sinelr.results import rank_text

if TYPE_CHECKING:
    from sinelr.report.model import Cell, Row

UNKNOWN = "unknown"
#: The CPU flags for native bf16 (x86's AVX-512 BF16 and AMX, Arm's BF16): with one, a CPU run
#: trains in bf16; without, in fp32 (benchmarks/RESULTS.md §6).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


class Source(NamedTuple):
    """What a run ran on, as the report prints it: ``941dad5+dirty``, ``AMD EPYC 7B13
    [avx512_bf16]``, ``bf16-mixed``; :data:`UNKNOWN` where results.json does not say."""

    commit: str
    machine: str
    precision: str

    def text(self) -> str:
        return UNKNOWN if set(self) == {UNKNOWN} else " · ".join(self)


def _commit(git: dict) -> str:
    """The commit, 7 hex, ``+dirty`` after it where tracked files had changes; ``no checkout``
    where the run had none (an installed wheel)."""
    commit = git.get("commit")
    if commit is None:
        return "no checkout" if "commit" in git else UNKNOWN
    return commit[:7] + ("+dirty" if git.get("dirty") else "")


def _machine(machine: dict) -> str:
    """The CPU model and its native-bf16 flags (``[no bf16]`` where it has none), and the GPU
    where one ran."""
    if not machine:
        return UNKNOWN
    flags = [flag for flag in BF16_FLAGS if flag in (machine.get("cpu_flags") or [])]
    text = f"{machine.get('cpu') or UNKNOWN} [{' '.join(flags) or 'no bf16'}]"
    return f"{text} + {machine['gpu']}" if machine.get("gpu") else text


def source(result: dict) -> Source:
    """A run's commit, machine and precision from its ``provenance`` (docs/contract.md)."""
    found = result.get("provenance") or {}
    return Source(
        _commit(found.get("git") or {}),
        _machine(found.get("machine") or {}),
        str(found.get("precision") or UNKNOWN),
    )


def cell_label(row: Row, item: str, cell: Cell) -> str:
    """A cell as a note names it: ``lucy k=1 sine_lowrank ω 200``."""
    omega = omega_text(cell) if cell.omega is not None or cell.omega_mode else ""
    return " ".join(
        filter(None, [item, f"k={rank_text(row.rank)}", row.method, omega and f"ω {omega}"])
    )


def _differing(cell: Cell) -> str:
    """What a cell's runs differ in, each value with its count of runs: ``machines (2× AMD EPYC
    7B13 [avx512_bf16], 1× Intel Xeon [avx512_bf16 amx_bf16])``."""
    parts = []
    for kind in cell.differs_in:
        counts = Counter(getattr(found, kind.removesuffix("s")) for found in cell.sources)
        parts.append(f"{kind} ({', '.join(f'{n}× {v}' for v, n in counts.most_common())})")
    return " and ".join(parts)


def mixed_notes(rows: list[Row]) -> list[str]:
    """A line per cell that pools runs of different commits, machines or precisions, naming
    each value with its count of runs; empty where no cell does."""
    return [
        f"{cell_label(row, item, cell)} pools runs of different {_differing(cell)}"
        for row in rows
        for item, cell in row.cells.items()
        if cell.differs_in
    ]


def provenance_lines(rows: list[Row]) -> list[str]:
    """Where the table's runs ran: one line where they share one commit, machine and
    precision; else a line per source naming its cells, then :func:`mixed_notes`."""
    cells: dict[Source, list[str]] = {}
    for row in rows:
        for item, cell in row.cells.items():
            for found in dict.fromkeys(cell.sources):
                cells.setdefault(found, []).append(cell_label(row, item, cell))
    if len(cells) == 1:
        return [f"provenance: {next(iter(cells)).text()}"]
    lines = [f"provenance: {found.text()}: {', '.join(labels)}" for found, labels in cells.items()]
    return [*lines, *(f"{MIXED_MARK.strip()} {note}" for note in mixed_notes(rows))]
