"""How much of the best ω's gain over plain each sine setting recovers, with its interval.

    python -m scripts.shares benchmarks/runs/omega_bof_e768a23 benchmarks/runs/ceilings_e768a23 \
        --task bof --data lucy --rank 1

For one (task, data item, rank): the plain cell (``lowrank`` or the plain adapter) and every
sine cell, by ω and ω mode (given, ``auto``, learnt), seeds pooled. The ceiling is the given-ω
cell with the best multi-seed mean: of its validation scores (results.json's ``selection``)
where every candidate's runs record an independent one, else of the test metric itself, which
the output then says. Each sine cell's share of the ceiling's gain is printed with a bootstrap
interval over the seeds the cells share (``sinelr.report.stats.share``: the ceiling is chosen
again in every resample). scripts/findings.py reads the same cells (:func:`cells`,
:func:`shares`) to fill the numbers of docs/omega.md.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sinelr.errors import InputError
from sinelr.report.load import data_name, load_results, row_omega
from sinelr.report.model import FIXED
from sinelr.report.stats import Share, share
from sinelr.results import SINE_PREFIX


def label(method: str, omega: float | None, mode: str) -> str:
    if omega is None or mode != FIXED:
        return f"{method} ({mode or 'given'})"
    return f"{method} ω {omega:g}"


@dataclass
class Cells:
    """One (task, data item, rank)'s runs by cell, ``(method, ω, ω mode)``: each cell's test
    metric and, where the runs record an independent one, its validation score, by seed."""

    tests: dict[tuple, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    selections: dict[tuple, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    directions: dict[str, bool] = field(default_factory=dict)  # "metric", "chosen": higher?


def cells(paths: list[Path], task: str, data: str, rank: int, preset: str | None = None) -> Cells:
    """The runs under ``paths`` of one (task, data item, rank), by cell. Two runs of one cell
    and seed differ in a setting the cell does not name, and pooling them would mix settings:
    an :class:`InputError` says to narrow the paths."""
    found = Cells()
    where: dict[tuple, str] = {}
    for r in load_results(paths):
        if (r["task"], data_name(r), r["rank"]) != (task, data, rank):
            continue
        if preset is not None and r["preset"] != preset:
            continue
        key = (r["method"], *row_omega(r))
        if r["seed"] in found.tests[key]:
            first, again = where[(*key, r["seed"])], r.get("output_dir", "?")
            raise InputError(f"{label(*key)} seed {r['seed']} ran twice ({first} and {again}): "
                             "narrow the paths or give --preset")  # fmt: skip
        where[(*key, r["seed"])] = r.get("output_dir", "?")
        found.tests[key][r["seed"]] = r["metric"]["value"]
        selection = r.get("selection") or {}
        if selection.get("independent") and selection.get("value") is not None:
            found.selections[key][r["seed"]] = selection["value"]
            found.directions["chosen"] = selection["higher_is_better"]
        found.directions["metric"] = r["metric"]["higher_is_better"]
    return found


@dataclass(frozen=True)
class Shares:
    """Every multi-seed cell of one sine method, with its share of the ceiling's gain (None:
    fewer than two seeds in common, or no gain over plain)."""

    plain_seeds: int
    candidates: list[tuple]  # the given-ω cells the ceiling is chosen among
    on_validation: bool  # whether the ceiling is chosen on validation scores, not on test
    shares: dict[tuple, Share | None]


def shares(found: Cells, method: str) -> Shares | None:
    """The shares of every multi-seed cell of the sine method ``method`` against its plain
    twin (``sine_lora`` against ``lora``), the ceiling among its given-ω cells; None where
    there are no plain runs to measure a gain from."""
    tests, selections = found.tests, found.selections
    plain = next((v for k, v in tests.items() if k[0] == method.removeprefix(SINE_PREFIX)), None)
    if plain is None:
        return None
    cells = [k for k in tests if k[0] == method and len(tests[k]) > 1]
    candidates = [k for k in cells if k[2] == FIXED]
    on_validation = all(len(selections[k]) == len(tests[k]) for k in candidates)
    chosen_by = [selections[k] for k in candidates] if on_validation else None
    ceilings = [tests[k] for k in candidates]
    higher, chosen_higher = found.directions.get("metric", True), found.directions.get("chosen")
    found_shares = {
        key: share(plain, tests[key], ceilings, chosen_by, higher, chosen_higher) for key in cells
    }
    return Shares(len(plain), candidates, on_validation, found_shares)


def print_shares(where: str, method: str, found: Cells) -> None:
    result = shares(found, method)
    if result is None:
        print(f"{where}: no {method.removeprefix(SINE_PREFIX)} runs to measure a gain from")
        return
    print(
        f"{where}: plain {result.plain_seeds} seeds; ceiling among "
        f"{', '.join(label(*k) for k in result.candidates) or 'no multi-seed candidate'}, "
        + ("chosen on validation" if result.on_validation else "chosen on the test metric itself")
    )
    for key, found_share in result.shares.items():
        text = "no share (fewer than two seeds in common, or no gain over plain)"
        if found_share is not None:
            ceiling = label(*result.candidates[found_share.ceiling])
            text = f"{found_share.text()} of {ceiling}'s gain"
        print(f"  {label(*key)} ({len(found.tests[key])} seeds): {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories (searched deeply)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, help="the data item (shape, scene, data set)")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--preset", help="only runs of this preset (NeRF: mini or midi)")
    args = parser.parse_args(argv)
    try:
        found = cells(args.paths, args.task, args.data, args.rank, args.preset)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sines = sorted({k[0] for k in found.tests if k[0].startswith(SINE_PREFIX)})
    if not sines:
        print(f"error: no sine runs for {args.task} {args.data} k={args.rank} under the paths "
              "given", file=sys.stderr)  # fmt: skip
        return 2
    for method in sines:
        print_shares(f"{args.task} {args.data} k={args.rank} {method}", method, found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
