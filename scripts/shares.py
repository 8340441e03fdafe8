"""How much of the best ω's gain over plain each sine setting recovers, with its interval.

    python -m scripts.shares benchmarks/runs/omega_bof_e768a23 benchmarks/runs/ceilings_e768a23 \
        --task bof --data lucy --rank 1

For one (task, data item, rank): the plain cell (``lowrank`` or the plain adapter) and every
sine cell, by ω and ω mode (given, ``auto``, learnt), seeds pooled. The ceiling is the given-ω
cell with the best multi-seed mean: of its validation scores (results.json's ``selection``)
where every candidate's runs record an independent one, else of the test metric itself, which
the output then says. Each sine cell's share of the ceiling's gain is printed with a bootstrap
interval over the seeds the cells share (``sinelr.report.stats.share``: the ceiling is chosen
again in every resample).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from sinelr.report.load import data_name, load_results, row_omega
from sinelr.report.model import FIXED
from sinelr.report.stats import share
from sinelr.results import SINE_PREFIX


def label(method: str, omega: float | None, mode: str) -> str:
    if omega is None or mode != FIXED:
        return f"{method} ({mode or 'given'})"
    return f"{method} ω {omega:g}"


def print_shares(
    args: argparse.Namespace,
    method: str,
    tests: dict[tuple, dict[int, float]],
    selections: dict[tuple, dict[int, float]],
    directions: dict[str, bool],
) -> None:
    """The shares of every multi-seed cell of the sine method ``method`` against its plain
    twin (``sine_lora`` against ``lora``), the ceiling among its given-ω cells."""
    plain = next((v for k, v in tests.items() if k[0] == method.removeprefix(SINE_PREFIX)), None)
    where = f"{args.task} {args.data} k={args.rank} {method}"
    if plain is None:
        print(f"{where}: no {method.removeprefix(SINE_PREFIX)} runs to measure a gain from")
        return
    cells = [k for k in tests if k[0] == method and len(tests[k]) > 1]
    candidates = [k for k in cells if k[2] == FIXED]
    on_validation = all(len(selections[k]) == len(tests[k]) for k in candidates)
    chosen_by = [selections[k] for k in candidates] if on_validation else None
    print(
        f"{where}: plain {len(plain)} seeds; ceiling among "
        f"{', '.join(label(*k) for k in candidates) or 'no multi-seed candidate'}, "
        + ("chosen on validation" if on_validation else "chosen on the test metric itself")
    )
    for key in cells:
        found = share(
            plain, tests[key], [tests[k] for k in candidates], chosen_by,
            directions.get("metric", True), directions.get("chosen"),
        )  # fmt: skip
        text = "no share (fewer than two seeds in common, or no gain over plain)"
        if found is not None:
            text = f"{found.text()} of {label(*candidates[found.ceiling])}'s gain"
        print(f"  {label(*key)} ({len(tests[key])} seeds): {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories (searched deeply)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, help="the data item (shape, scene, data set)")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--preset", help="only runs of this preset (NeRF: mini or midi)")
    args = parser.parse_args(argv)

    tests: dict[tuple, dict[int, float]] = defaultdict(dict)
    selections: dict[tuple, dict[int, float]] = defaultdict(dict)
    where: dict[tuple, str] = {}
    directions: dict[str, bool] = {}
    for r in load_results(args.paths):
        if (r["task"], data_name(r), r["rank"]) != (args.task, args.data, args.rank):
            continue
        if args.preset is not None and r["preset"] != args.preset:
            continue
        key = (r["method"], *row_omega(r))
        if r["seed"] in tests[key]:  # two runs of one cell and seed: a different setting
            first = where[(*key, r["seed"])]
            again = r.get("output_dir", "?")
            print(f"error: {label(*key)} seed {r['seed']} ran twice ({first} and {again}): "
                  "narrow the paths or give --preset", file=sys.stderr)  # fmt: skip
            return 2
        where[(*key, r["seed"])] = r.get("output_dir", "?")
        tests[key][r["seed"]] = r["metric"]["value"]
        selection = r.get("selection") or {}
        if selection.get("independent") and selection.get("value") is not None:
            selections[key][r["seed"]] = selection["value"]
            directions["chosen"] = selection["higher_is_better"]
        directions["metric"] = r["metric"]["higher_is_better"]
    sines = sorted({k[0] for k in tests if k[0].startswith(SINE_PREFIX)})
    if not sines:
        print(f"error: no sine runs for {args.task} {args.data} k={args.rank} under the paths "
              "given", file=sys.stderr)  # fmt: skip
        return 2
    for method in sines:
        print_shares(args, method, tests, selections, directions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
