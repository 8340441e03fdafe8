"""Compare runs: ``python -m scripts.report outputs/multirun/<sweep> [more dirs] [--markdown]``.

Reads every completed results.json below the given paths and prints one row per
(task, data, rank) with one column per method, seeds pooled as ``mean ± std (n) [95 %
interval]`` and ``sine − plain`` as ``+1.23 [0.41, 2.05]`` (paired by seed where it can be;
``(n.r.)`` where the interval holds 0): one table per task and preset, and per setting that
differs between runs that would share a cell; the same grouping as the dashboard's (a
commonsense run gives a row per set). Under each table: the commit, machine and precision its
runs ran at, and each cell that pools runs differing in one (``‡``); ``--strict-provenance``
refuses to pool such runs at all (docs/report.md).
``--out DIR`` also writes the dashboard: ``DIR/index.html`` (self-contained), ``DIR/report.md``
and ``DIR/plots/*.png``, our numbers beside the paper's, failed runs listed with their errors.
``--wandb`` logs the summary table (and those plots) as a W&B run: offline, without a key or a
network, in ``<DIR or the first path>/wandb/`` for ``wandb sync`` to upload later.
``--bench FILE`` prints a benchmark's ``--json`` (``scripts/bench_nerf.py``: Table 12,
``scripts/bench_llama_memory.py``: Table 6) beside the paper's table, as ratios between methods.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sinelr.report import (
    bd_deltas,
    bench_markdown,
    load_results,
    markdown,
    mixed_cells,
    print_table,
    scored,
    summarise,
    table_groups,
    table_notes,
    upload_wandb,
    write_dashboard,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="results.json files or directories holding them")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply metrics (100 for %%)")
    parser.add_argument("--out", help="write the dashboard (index.html, report.md, plots) here")
    parser.add_argument("--wandb", action="store_true", help="log the summary table to W&B")
    parser.add_argument("--wandb-project", default="sinelr", help="W&B project (default sinelr)")
    parser.add_argument("--bench", nargs="+", default=[], help="bench_*.py --json files")
    parser.add_argument(
        "--strict-provenance",
        action="store_true",
        help="refuse to pool runs of different commits, machines or precisions in one cell",
    )
    args = parser.parse_args(argv)
    for path in args.bench:
        print(bench_markdown(json.loads(Path(path).read_text()), path))
    if not args.paths:
        if args.bench:
            return 0
        parser.error("give results.json files or directories, or --bench FILE")
    if (args.out or args.wandb) and not load_results(args.paths, completed_only=False):
        print(f"no results.json under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    results = scored(load_results(args.paths))
    mixed = mixed_cells(results) if args.strict_provenance else []
    if mixed:
        more = f" (and {len(mixed) - 1} more cells)" if len(mixed) > 1 else ""
        print(f"--strict-provenance: {mixed[0]}{more}", file=sys.stderr)
        return 1
    if args.out:
        print(f"dashboard: {write_dashboard(args.paths, args.out)}")
    if args.wandb:
        run_dir = upload_wandb(args.paths, args.out or args.paths[0], args.wandb_project)
        print(f"wandb run: {run_dir}")
    if not results:
        print(f"no completed results.json under {', '.join(args.paths)}", file=sys.stderr)
        return 0 if args.out or args.wandb else 1
    for (task, preset, settings), runs in table_groups(results):
        rows = summarise(runs)
        runs_at = f"{len(runs)} completed runs at preset={preset}"
        title = " · ".join(filter(None, [runs_at, settings]))
        if args.markdown:
            print(f"### {task} · {title}\n\n{markdown(rows, args.scale)}")
        else:
            print_table(rows, args.scale, title=title)
        for d in bd_deltas(rows):
            print(f"{d.task} {d.data}: {d.text(args.scale)}")
        for line in table_notes(rows, runs):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
