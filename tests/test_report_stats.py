"""The report's statistics and provenance: each cell's interval, the sine − plain gap paired
by seed (or Welch's where the seeds differ), the not-resolved mark, the provenance lines and
the note on a cell that pools unlike runs, and ``--strict-provenance``. The intervals are
checked against scipy.stats, computed here independently of ``sinelr.report.stats``."""

from __future__ import annotations

import html
import json
import re
import statistics
from pathlib import Path

import pytest
from scipy import stats

from scripts.report import main as report_main
from scripts.shares import main as shares_main
from sinelr.report import layout, load_results, summarise
from sinelr.report.model import lines, sine_gap, sine_pair
from sinelr.report.stats import Gap, share

AMD = {"cpu": "AMD EPYC 7B13", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"], "cores": 2,
       "gpu": None}  # fmt: skip
XEON = {"cpu": "Intel Xeon 8480", "cpu_flags": ["avx512_bf16", "amx_bf16"], "cores": 8,
        "gpu": None}  # fmt: skip
OLD = {"cpu": "Intel Core i7-8700", "cpu_flags": ["avx2", "fma"], "cores": 6, "gpu": None}
COMMIT = "941dad5" + "0" * 33


def provenance(machine: dict = AMD, commit: str | None = COMMIT, dirty: bool = False,
               precision: str = "bf16-mixed") -> dict:  # fmt: skip
    """results.json's ``provenance`` as docs/contract.md has it."""
    return {
        "git": {"commit": commit, "dirty": dirty},
        "started_at": "2026-12-07T20:01:02Z",
        "finished_at": "2026-12-07T20:03:04Z",
        "machine": machine,
        "versions": {"python": "3.11.7", "torch": "2.5.1"},
        "precision": precision,
        "command": ["task=bof"],
    }


def run(method: str, rank: int, value: float, seed: int, omega: float | None = None,
        prov: dict | None = None, **extra) -> dict:  # fmt: skip
    """A completed bof run on lucy; ``prov`` None: a results.json from before provenance."""
    found = {
        "task": "bof", "method": method, "rank": rank, "omega": omega, "seed": seed,
        "preset": "smoke", "status": "completed", "params": {"total": 100 * rank},
        "metric": {"name": "test/iou", "value": value, "higher_is_better": True},
        "task_config": {"_target_": "tasks.bof.BofTask", "shape": "lucy"}, **extra,
    }  # fmt: skip
    if prov is not None:
        found["provenance"] = prov
    return found


def write(root: Path, runs: list[dict]) -> Path:
    """Each run as ``root/<i>/results.json``, as a sweep leaves them."""
    for i, r in enumerate(runs):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / "results.json").write_text(json.dumps(r))
    return root


def pair_runs(plain: list[float], sine: list[float], plain_seeds=None, sine_seeds=None,
              prov: dict | None = None) -> list[dict]:  # fmt: skip
    """lowrank and sine_lowrank (ω = 200) at k = 1, seeds 0, 1, ... unless given."""
    plain_seeds = plain_seeds or range(len(plain))
    sine_seeds = sine_seeds or range(len(sine))
    return [run("lowrank", 1, v, s, prov=prov) for v, s in zip(plain, plain_seeds, strict=True)] + [
        run("sine_lowrank", 1, v, s, 200.0, prov=prov)
        for v, s in zip(sine, sine_seeds, strict=True)
    ]


def the_gap(runs: list[dict]) -> Gap:
    """The one sine − plain gap of ``runs``."""
    ((*_, cells),) = lines(summarise(runs))
    return sine_gap(*sine_pair(cells))


def test_a_cells_interval_is_the_student_t_interval_of_its_mean():
    values = [0.70, 0.73, 0.71, 0.76]
    (row,) = summarise([run("lowrank", 1, v, seed) for seed, v in enumerate(values)])
    cell = row.cells["lucy"]
    sem = statistics.stdev(values) / len(values) ** 0.5
    low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values), scale=sem)
    assert cell.interval == pytest.approx((low, high), rel=1e-12)
    assert cell.text(100) == f"72.50 ± 2.65 (4) [{100 * low:.2f}, {100 * high:.2f}]"
    assert cell.text(100) == "72.50 ± 2.65 (4) [68.29, 76.71]"
    (single,) = summarise([run("lowrank", 1, 0.7, 0)])
    assert single.cells["lucy"].interval is None and single.cells["lucy"].text(100) == "70.00"


def test_a_gap_over_the_same_seeds_is_paired_by_seed_not_by_position():
    # Seed 1 is hard for both arms; sine beats plain by 2-4 points on every seed. The sine
    # runs come in another order: pairing must follow the seed, not the list.
    plain = {0: 0.70, 1: 0.60, 2: 0.72}
    sine = {2: 0.75, 0: 0.74, 1: 0.62}
    runs = pair_runs(list(plain.values()), list(sine.values()), list(plain), list(sine))
    gap = the_gap(runs)
    diffs = [sine[s] - plain[s] for s in (0, 1, 2)]
    expected = stats.ttest_rel([sine[s] for s in (0, 1, 2)], [plain[s] for s in (0, 1, 2)])
    low, high = expected.confidence_interval(0.95)
    assert gap.paired and gap.mean == pytest.approx(statistics.fmean(diffs))
    assert gap.interval == pytest.approx((low, high), rel=1e-9)
    assert gap.resolved and gap.text(100) == f"+3.00 [{100 * low:.2f}, {100 * high:.2f}]"
    # Unpaired, the same runs would not resolve the gap: seed 1's dip swamps it.
    welch = stats.ttest_ind(list(sine.values()), list(plain.values()), equal_var=False)
    assert welch.confidence_interval(0.95).low < 0


def test_a_gap_over_different_seeds_is_welchs_interval_and_says_unpaired():
    plain, sine = [0.70, 0.73, 0.71], [0.80, 0.86]
    gap = the_gap(pair_runs(plain, sine, sine_seeds=[3, 4]))
    low, high = stats.ttest_ind(sine, plain, equal_var=False).confidence_interval(0.95)
    assert not gap.paired
    assert gap.mean == pytest.approx(statistics.fmean(sine) - statistics.fmean(plain))
    assert gap.interval == pytest.approx((low, high), rel=1e-9)
    assert gap.text(100) == f"+11.67 [{100 * low:.2f}, {100 * high:.2f}] (unpaired, n.r.)"
    assert low < 0 < high  # 2 sine seeds: Welch's df ≈ 1.5, too few to resolve 11.67 points
    # A seed run twice on one side pairs nothing either.
    assert not the_gap(pair_runs([0.7, 0.71], [0.8, 0.81], [0, 0], [0, 0])).paired


def test_a_gap_whose_interval_holds_zero_is_marked_not_resolved():
    resolved = the_gap(pair_runs([0.70, 0.72, 0.71], [0.75, 0.76, 0.77]))
    unresolved = the_gap(pair_runs([0.70, 0.72, 0.71], [0.74, 0.70, 0.73]))
    shape = re.compile(r"^[+-]\d+\.\d\d \[-?\d+\.\d\d, -?\d+\.\d\d\]")
    assert shape.match(resolved.text(100)) and shape.match(unresolved.text(100))
    assert resolved.resolved and "n.r." not in resolved.text(100)
    assert not unresolved.resolved and unresolved.text(100).endswith(" (n.r.)")
    one_seed = the_gap(pair_runs([0.70], [0.75]))
    assert one_seed.interval is None and one_seed.text(100) == "+5.00"  # no brackets, no mark


def test_the_terminal_and_markdown_tables_and_the_dashboard_print_the_gap(
    tmp_path, capsys, monkeypatch
):
    root = write(tmp_path / "sweep", pair_runs([0.70, 0.72, 0.71], [0.75, 0.76, 0.77]))
    gap = the_gap(load_results([root]))
    text = gap.text(100)
    assert text.startswith("+5.00 [")
    assert report_main([str(root), "--markdown", "--scale", "100"]) == 0
    assert f"| 200 | {text} |" in capsys.readouterr().out
    monkeypatch.setenv("COLUMNS", "200")  # a terminal wide enough for the table unwrapped
    assert report_main([str(root), "--scale", "100"]) == 0
    assert f"│ {text} │" in capsys.readouterr().out
    assert report_main([str(root), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| lucy | 1 | sine_lowrank | 200 | 71.00 ± 1.00 (3) [68.52, 73.48] | " in report
    assert report.count(text) == 1 and "(n.r.): not resolved" in report
    page = html.unescape((tmp_path / "out" / "index.html").read_text())
    (line,) = re.findall(r'<tr data-gap="([^"]+)" data-paired="true" data-low="([^"]+)" '
                         r'data-high="([^"]+)">(.*?)</tr>', page)  # fmt: skip
    assert [float(x) for x in line[:3]] == pytest.approx([5.0, *(b * 100 for b in gap.interval)])
    assert f"<td>{text}</td>" in line[3]


def test_provenance_is_one_line_where_every_run_shares_it_and_unknown_without_it(tmp_path):
    same = pair_runs([0.70, 0.72], [0.75, 0.76], prov=provenance(commit="a" * 40, dirty=True))
    (table,) = layout(same)
    assert table.notes == ["provenance: aaaaaaa+dirty · AMD EPYC 7B13 [avx512_bf16] · bf16-mixed"]
    (wheel,) = layout(pair_runs([0.7], [0.75], prov=provenance(OLD, commit=None, dirty=None)))
    assert wheel.notes == ["provenance: no checkout · Intel Core i7-8700 [no bf16] · bf16-mixed"]
    (old,) = layout(pair_runs([0.70, 0.72], [0.75, 0.76]))  # no provenance: not a mismatch
    assert old.notes == ["provenance: unknown"]
    assert not any(cell.differs_in for row in old.rows for cell in row.cells.values())
    write(tmp_path / "old", pair_runs([0.70, 0.72], [0.75, 0.76]))
    assert report_main([str(tmp_path / "old"), "--strict-provenance"]) == 0


def test_a_cell_pooling_runs_of_two_machines_is_marked_and_noted(tmp_path, capsys):
    runs = pair_runs([0.70, 0.72], [0.75, 0.76], prov=provenance())
    runs.append(run("lowrank", 1, 0.71, 2, prov=provenance(XEON)))
    (table,) = layout(runs)
    plain = next(row for row in table.rows if row.method == "lowrank" and row.cells)
    assert plain.cells["lucy"].differs_in == ["machines"]
    assert plain.cells["lucy"].text(100).endswith(" ‡")
    assert table.notes[-1] == (
        "‡ lucy k=1 lowrank pools runs of different machines "
        "(2× AMD EPYC 7B13 [avx512_bf16], 1× Intel Xeon 8480 [avx512_bf16 amx_bf16])"
    )
    assert "provenance: 941dad5 · Intel Xeon 8480 [avx512_bf16 amx_bf16] · bf16-mixed: " \
        "lucy k=1 lowrank" in table.notes  # fmt: skip
    root = write(tmp_path / "sweep", runs)
    assert report_main([str(root), "--out", str(tmp_path / "out")]) == 0  # noted, not refused
    assert table.notes[-1] in capsys.readouterr().out
    assert html.escape(table.notes[-1]) in (tmp_path / "out" / "index.html").read_text()
    assert f"- {table.notes[-1]}" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    ("other", "differ"),
    [
        (provenance(commit="b" * 40), "commits (1× 941dad5, 1× bbbbbbb)"),
        (provenance(dirty=True), "commits (1× 941dad5, 1× 941dad5+dirty)"),
        (provenance(precision="32-true"), "precisions (1× bf16-mixed, 1× 32-true)"),
        (provenance(OLD, precision="32-true"),
         "machines (1× AMD EPYC 7B13 [avx512_bf16], 1× Intel Core i7-8700 [no bf16]) and "
         "precisions (1× bf16-mixed, 1× 32-true)"),
        (None, "commits (1× 941dad5, 1× unknown) and machines (1× AMD EPYC 7B13 [avx512_bf16], "
               "1× unknown) and precisions (1× bf16-mixed, 1× unknown)"),
    ],
)  # fmt: skip
def test_strict_provenance_refuses_a_cell_of_unlike_runs_in_one_line(
    tmp_path, capsys, other, differ
):
    runs = [run("lowrank", 1, 0.70, 0, prov=provenance()), run("lowrank", 1, 0.72, 1, prov=other)]
    root = write(tmp_path / "sweep", runs)
    assert report_main([str(root), "--strict-provenance", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == f"--strict-provenance: bof · preset=smoke: lucy k=1 lowrank pools runs of " \
        f"different {differ}\n"  # fmt: skip
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert report_main([str(root)]) == 0  # without the flag: pooled, with its note


def test_a_selection_that_reads_the_test_data_is_noted_under_its_table():
    selection = {"name": "val/iou", "value": 0.7, "higher_is_better": True}
    fits = [run("lowrank", 1, 0.7, 0, selection={**selection, "independent": False})]
    held_out = [run("lowrank", 1, 0.7, 0, selection={**selection, "independent": True})]
    (table,) = layout(fits)
    assert table.notes[-1] == (
        "selection: these runs have no data apart from their test data, so a setting chosen "
        "among them is chosen on the reported test/iou"
    )
    (table,) = layout(held_out)
    assert not any(note.startswith("selection:") for note in table.notes)


def test_a_share_is_of_the_ceiling_chosen_on_validation_with_a_bootstrap_interval():
    plain = {0: 0.50, 1: 0.60, 2: 0.70}
    arm = {0: 0.70, 1: 0.80, 2: 0.90}  # +0.20 at every seed
    high = {0: 0.90, 1: 1.00, 2: 1.10}  # +0.40: the best on test
    low = {0: 0.80, 1: 0.90, 2: 1.00}  # +0.30
    # Chosen on its own values: the ceiling is `high`, half of its gain; every resample agrees.
    found = share(plain, arm, [low, high])
    assert found.ceiling == 1 and found.value == pytest.approx(0.5)
    assert found.interval == pytest.approx((0.5, 0.5)) and found.text() == "50 % [50, 50]"
    # Validation prefers `low`: it is the ceiling, and the arm recovers two thirds of its gain.
    validation = [{0: 0.9, 1: 0.9, 2: 0.9}, {0: 0.1, 1: 0.1, 2: 0.1}]
    chosen = share(plain, arm, [low, high], chosen_by=validation)
    assert chosen.ceiling == 0 and chosen.value == pytest.approx(2 / 3)


def test_a_share_interval_resamples_seeds_together():
    plain = {0: 0.5, 1: 0.5, 2: 0.5}
    arm = {0: 0.6, 1: 0.7, 2: 0.8}
    ceiling = {0: 0.9, 1: 0.9, 2: 0.9}
    found = share(plain, arm, [ceiling])
    assert found.value == pytest.approx(0.5)
    # Per seed the share is 0.25, 0.5, 0.75; a resample's share is the mean of its draws', so
    # the interval lies inside [0.25, 0.75] (to float rounding of the means: 1e-12) and
    # strictly contains the point.
    low, high = found.interval
    assert 0.25 - 1e-12 <= low < 0.5 < high <= 0.75 + 1e-12


def test_no_share_without_a_gain_or_two_common_seeds():
    plain = {0: 0.9, 1: 0.9}
    assert share(plain, {0: 0.95, 1: 0.95}, [{0: 0.8, 1: 0.8}]) is None  # nothing to recover
    assert share({0: 0.1}, {0: 0.2}, [{0: 0.3}]) is None  # one seed: no interval possible


def test_the_shares_script_chooses_the_ceiling_on_validation_where_runs_record_it(tmp_path, capsys):
    """Two candidates: ω 400 is best on test, ω 200 on validation; the script must take 200."""

    def sel(value: float) -> dict:
        selection = {"name": "val/iou", "value": value, "higher_is_better": True}
        return {"selection": {**selection, "independent": True}}

    runs = []
    for seed in range(3):
        runs += [
            run("lowrank", 1, 0.50, seed, **sel(0.5)),
            run("sine_lowrank", 1, 0.90, seed, 400.0, **sel(0.6)),  # best on test
            run("sine_lowrank", 1, 0.70, seed, 200.0, **sel(0.8)),  # best on validation
        ]
    root = write(tmp_path / "runs", runs)
    assert shares_main([str(root), "--task", "bof", "--data", "lucy", "--rank", "1"]) == 0
    printed = capsys.readouterr().out
    assert "chosen on validation" in printed
    assert "sine_lowrank ω 400 (3 seeds): 200 % [200, 200] of sine_lowrank ω 200's gain" in printed


def test_a_lower_is_better_selection_chooses_the_lowest_validation_loss():
    plain = {0: 0.5, 1: 0.5}
    arm = {0: 0.6, 1: 0.6}
    first, second = {0: 0.9, 1: 0.9}, {0: 0.7, 1: 0.7}
    losses = [{0: 2.0, 1: 2.0}, {0: 1.0, 1: 1.0}]  # the second has the lower validation loss
    found = share(plain, arm, [first, second], losses, chosen_higher_is_better=False)
    assert found.ceiling == 1 and found.value == pytest.approx(0.5)
    # A lower-is-better metric: the same numbers negated give the same share.
    negated = share({0: -0.5, 1: -0.5}, {0: -0.6, 1: -0.6}, [{0: -0.7, 1: -0.7}],
                    higher_is_better=False)  # fmt: skip
    assert negated.value == pytest.approx(0.5)
