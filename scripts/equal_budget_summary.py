"""The tables of an equal-budget sweep (``hparams_search=equal_budget``), from its runs.

    python -m scripts.equal_budget_summary benchmarks/runs/eb_<commit>/<cell> [...] [--scale 100]

For each cell: every arm's search trials with their validation score (what chose the winner),
then each winner's test score over the fresh seeds (mean ± std and a 95 % t interval), the
sine arm's gap to every other arm paired by seed (docs/report.md's rules), and the mean stable
rank of the factorised layers' weights or updates (``diagnostics.rank``): a sine adapter whose
update has LoRA's stable rank has stayed in its linear regime. Markdown, for RESULTS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from sinelr.equal_budget import at_edge, chose_on_validation, stable_rank, winner_runs
from sinelr.report.stats import gap, mean_interval

SINE = "sine"  # the arm every other arm is compared with
#: Overrides of a cell that do not tell it from the sweep's other cells.
UNSHOWN = ("+", "preset=", "skip_done=", "trainer.enable_progress_bar=")


def cell_tables(sweep: Path, scale: float) -> list[str]:
    record = json.loads((sweep / "equal_budget.json").read_text())
    lines = []
    for cell in record["cells"]:
        shown = (o for o in cell["cell"] if not o.startswith(UNSHOWN))
        cell_name = " ".join(shown)
        lines += [f"**{sweep.name}** ({cell_name}), search seeds {record['search_seeds']}:", ""]
        tested = {
            arm: winner_runs(sweep, cell["cell"], d) if d["winner"] else []
            for arm, d in cell["arms"].items()
        }
        column = (
            "selection (validation)" if chose_on_validation(cell, tested) else "selection (test)"
        )
        lines += [f"| arm | trial | {column} |", "|---|---|---:|"]
        for arm, data in cell["arms"].items():
            for trial in data["trials"]:
                mark = "**" if trial["overrides"] == data["winner"] else ""
                mean = "failed" if trial["mean"] is None else f"{trial['mean'] * scale:.2f}"
                lines.append(f"| {arm} | {' '.join(trial['overrides'])} | {mark}{mean}{mark} |")
        edge = [arm for arm, d in cell["arms"].items() if at_edge(d)]
        if edge:
            lines += ["", f"At the edge of its grid: {', '.join(edge)} (its best may lie beyond)."]
        lines += ["", f"Winners at seeds {record['seeds']} (test):", ""]
        lines += [
            "| arm | winner | test mean ± std | 95 % interval | stable rank | sine − arm |",
            "|---|---|---|---|---:|---|",
        ]
        sine = tested.get(SINE, [])
        for arm, runs in tested.items():
            values = [r["metric"]["value"] for r in runs]
            if not values:
                winner = " ".join(cell["arms"][arm]["winner"] or ["none (every trial failed)"])
                lines.append(f"| {arm} | {winner} | not run | | | |")
                continue
            std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
            interval = mean_interval(values)
            band = (
                ""
                if interval is None
                else f"[{interval[0] * scale:.2f}, {interval[1] * scale:.2f}]"
            )
            ranks = [s for s in map(stable_rank, runs) if s is not None]
            rank = f"{statistics.fmean(ranks):.2f}" if ranks else ""
            versus = ""
            if arm != SINE and sine:
                versus = gap(
                    values, [r["metric"]["value"] for r in sine],
                    [r["seed"] for r in runs], [r["seed"] for r in sine],
                ).text(scale)  # fmt: skip
            lines.append(
                f"| {arm} | {' '.join(cell['arms'][arm]['winner'])} | "
                f"{statistics.fmean(values) * scale:.2f} ± {std:.2f} ({len(values)}) | {band} | "
                f"{rank} | {versus} |"
            )
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="equal-budget sweep directories")
    parser.add_argument("--scale", type=float, default=100.0, help="multiply metrics (default 100)")
    args = parser.parse_args(argv)
    for sweep in args.sweeps:
        if not (sweep / "equal_budget.json").is_file():
            print(f"error: {sweep} has no equal_budget.json: not an equal-budget sweep (or its "
                  "search stage has not finished)", file=sys.stderr)  # fmt: skip
            return 2
        print("\n".join(cell_tables(sweep, args.scale)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
