"""Compare runs: ``python scripts/report.py outputs/multirun/<sweep> [more dirs] [--markdown]``.

Reads every completed results.json below the given paths and prints one row per
(task, data, rank) with one column per method, seeds pooled as ``mean ± std (n)``.
"""

from __future__ import annotations

import argparse
import sys

from sinelr.report import bd_deltas, load_results, markdown, print_table, summarise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="results.json files or directories holding them")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply metrics (100 for %%)")
    args = parser.parse_args(argv)
    results = load_results(args.paths)
    if not results:
        print(f"no completed results.json under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    rows = summarise(results)
    if args.markdown:
        print(markdown(rows, args.scale))
    else:
        print_table(rows, args.scale, title=f"{len(results)} completed runs")
    for d in bd_deltas(rows):
        print(
            f"{d.task} {d.data}: sine over plain at ranks {d.ranks} (Akima, parameters as rate): "
            f"BD-{d.metric} {d.bd_metric:+.3g}, BD-rate {d.bd_rate:+.1f} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
