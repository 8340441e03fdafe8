"""The tables of an equal-budget sweep (``hparams_search=equal_budget``), from its runs.

    python scripts/equal_budget_summary.py benchmarks/runs/eb_<commit>/<cell> [...] [--scale 100]

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

from hydra_plugins.sinelr_sweeper.table_sweeper import canonical_job
from sinelr.equal_budget import merged
from sinelr.keys import override_key
from sinelr.report.stats import gap, mean_interval

SINE = "sine"  # the arm every other arm is compared with
#: Overrides of a cell that do not tell it from the sweep's other cells.
UNSHOWN = ("+", "preset=", "skip_done=", "trainer.enable_progress_bar=")
#: Overrides that do not change what a job computes (conf/hydra/default.yaml's exclude_keys).
NOT_COMPUTED = {
    "experiment", "skip_done", "resume", "ckpt_path", "logger", "paths.data_dir",
    "paths.cache_dir", "paths.runs_dir", "trainer.enable_progress_bar", "hparams_search",
}  # fmt: skip


def computed(overrides: list[str] | set[str]) -> set[str]:
    """The overrides that change what a job computes: not ``skip_done``, the logger, paths, ...
    (those Hydra's ``override_dirname`` leaves out, conf/hydra/default.yaml)."""
    return {o for o in overrides if override_key(o).lstrip("+") not in NOT_COMPUTED}


def test_runs(sweep: Path, cell: list[str], arm: dict) -> list[dict]:
    """The completed test runs of an arm's winner, by seed: the directories the sweeper
    recorded, or (a record without them) each test job whose overrides as typed
    (``provenance.command``) hold the cell's and the winner's."""
    if "tests" in arm:
        paths = [Path(d) / "results.json" for d in arm["tests"]]
        runs = [json.loads(p.read_text()) for p in paths if p.is_file()]
    else:
        expected = computed(canonical_job(merged(cell, arm["winner"])))
        runs = [
            result
            for path in sorted((sweep / "test").glob("*/results.json"))
            if expected <= computed((result := json.loads(path.read_text()))
                                    .get("provenance", {}).get("command", []))
        ]  # fmt: skip
    return sorted((r for r in runs if r["status"] == "completed"), key=lambda r: r["seed"])


def independent(cell: dict, tested: dict[str, list[dict]]) -> bool:
    """Whether the trials were chosen on data apart from the test data: the record's word, or
    (a record from before it said) the test runs' ``selection.independent``."""
    trials = [t for arm in cell["arms"].values() for t in arm["trials"]]
    if all("independent" in t for t in trials):
        return all(t["independent"] for t in trials)
    runs = [r for rs in tested.values() for r in rs]
    return bool(runs) and all((r.get("selection") or {}).get("independent") for r in runs)


def at_edge(arm: dict) -> bool:
    """Whether an arm's winner is the first or last setting of a grid of three or more: its
    best may lie outside what was searched."""
    settings = [t["overrides"] for t in arm["trials"]]
    return len(settings) >= 3 and arm["winner"] in (settings[0], settings[-1])


def stable_rank(result: dict) -> float | None:
    layers = result.get("diagnostics", {}).get("rank", {})
    ranks = [d["stable_rank"] for d in layers.values()]
    return statistics.fmean(ranks) if ranks else None


def cell_tables(sweep: Path, scale: float) -> list[str]:
    record = json.loads((sweep / "equal_budget.json").read_text())
    lines = []
    for cell in record["cells"]:
        shown = (o for o in cell["cell"] if not o.startswith(UNSHOWN))
        cell_name = " ".join(shown)
        lines += [f"**{sweep.name}** ({cell_name}), search seeds {record['search_seeds']}:", ""]
        tested = {
            arm: test_runs(sweep, cell["cell"], d) if d["winner"] else []
            for arm, d in cell["arms"].items()
        }
        column = "selection (validation)" if independent(cell, tested) else "selection (test)"
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
