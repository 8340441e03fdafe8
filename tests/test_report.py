"""Tables from results.json: grouping, seed pooling, the sine − plain column, and the data
item each run records."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from sinelr.report import (
    bd_deltas,
    layout,
    load_results,
    markdown,
    render_markdown,
    summarise,
    table_groups,
)
from sinelr.report.load import data_key, omega_mode
from sinelr.report.model import lines, sine_pair
from sinelr.report.plots import AUTO_LABEL, END_LABEL, START_LABEL, omega_figure
from sinelr.report.publish import SUMMARY_COLUMNS, summary_rows
from tests.helpers import dry_run


def result(method, rank, value, seed=0, omega=None, shape="lucy", status="completed"):
    return {
        "task": "bof", "method": method, "rank": rank, "omega": omega, "seed": seed,
        "status": status, "params": {"total": 100 * (rank or 10)},
        "metric": {"name": "test/iou", "value": value, "higher_is_better": True},
        "task_config": {"_target_": "tasks.bof.BofTask", "shape": shape},
    }  # fmt: skip


def test_seeds_pool_and_sine_minus_plain_is_the_difference_of_means():
    rows = summarise(
        [
            result("lowrank", 1, 0.70, seed=0),
            result("lowrank", 1, 0.74, seed=1),
            result("sine_lowrank", 1, 0.80, seed=0, omega=200.0),
            result("sine_lowrank", 1, 0.84, seed=1, omega=200.0),
            result("dense", None, 0.97),
        ]
    )
    assert [(r.method, r.rank, list(r.cells)) for r in rows] == [
        ("dense", None, ["lucy"]),
        ("lowrank", 1, ["lucy"]),
        ("sine_lowrank", 1, ["lucy"]),
    ]
    turned = list(lines(rows))
    assert [(data, rank) for _, data, rank, _ in turned] == [("lucy", None), ("lucy", 1)]
    plain, sine = sine_pair(turned[1][3])
    assert plain.mean == pytest.approx(0.72) and sine.mean == pytest.approx(0.82)
    table = markdown(rows, scale=100).splitlines()
    assert table[0].split(" | ")[5:] == ["dense", "lowrank", "sine_lowrank", "ω", "sine − plain |"]
    assert table[2].startswith("| bof | lucy | full | 1,000 | test/iou | 97.00 |")
    assert table[3].endswith(
        "| 72.00 ± 2.83 (2) [46.59, 97.41] | 82.00 ± 2.83 (2) [56.59, 107.41] | 200 "
        "| +10.00 [10.00, 10.00] |"
    )  # each seed's sine 10 points above its plain: a paired gap of no spread


def test_an_omega_sweep_gets_one_row_per_omega_beside_the_same_plain_cell():
    rows = summarise(
        [
            result("lowrank", 1, 0.70),
            result("sine_lowrank", 1, 0.80, omega=200.0),
            result("sine_lowrank", 1, 0.60, omega=50.0),
            result("sine_lowrank", 1, 0.90, omega=800.0),
        ]
    )
    pairs = [sine_pair(cells) for *_, cells in lines(rows)]
    assert [sine.omega for _, sine in pairs] == [50.0, 200.0, 800.0]
    assert [sine.mean for _, sine in pairs] == [0.60, 0.80, 0.90]
    assert all(plain.values == [0.70] for plain, _ in pairs)


def test_a_sweep_without_plain_at_its_rank_still_names_each_lines_omega():
    sweep = ((100.0, 0.9), (250.0, 0.8))
    rows = summarise([result("sine_lowrank", 5, value, omega=omega) for omega, value in sweep])
    table = markdown(rows, scale=100).splitlines()[2:]
    assert [line.split(" | ")[-2:] for line in table] == [["100", " |"], ["250", " |"]]


def with_settings(r, lr, epochs=10):
    """``r`` with a results.json fingerprint: its task's lr and the trainer's epochs."""
    fingerprint = {"task": {"shape": r["task_config"]["shape"], "lr": lr}, "rank": r["rank"],
                   "omega": r["omega"], "seed": r["seed"], "preset": "mini",
                   "trainer": {"max_epochs": epochs}}  # fmt: skip
    return {**r, "preset": "mini", "fingerprint": fingerprint}


def test_runs_that_differ_in_another_setting_get_their_own_table_not_a_pooled_cell():
    grid = [with_settings(result("lowrank", 1, 0.70 + s / 100, seed=s), 1e-3) for s in range(3)]
    grid += [
        with_settings(result("sine_lowrank", 1, 0.8, seed=s, omega=200.0), 1e-3) for s in (0, 1)
    ]
    grid += [with_settings(result("lowrank", 1, 0.7, shape="bunny"), 1e-3)]
    probe = [with_settings(result("lowrank", 1, 0.10), 1e-4)]  # a learning-rate probe, seed 0
    groups = table_groups(grid + probe)
    assert [(key, len(runs)) for key, runs in groups] == [
        (("bof", "mini", "task.lr=0.001"), 6),
        (("bof", "mini", "task.lr=0.0001"), 1),
    ]
    main, lr_probe = layout(grid + probe)
    assert main.title == "bof · preset=mini · task.lr=0.001" and main.slug != lr_probe.slug
    plain = next(row for row in main.rows if row.method == "lowrank" and row.cells)
    assert plain.cells["lucy"].values == pytest.approx([0.70, 0.71, 0.72])  # not the probe's 0.10
    assert [row.cells["lucy"].values for row in lr_probe.rows if row.cells] == [[0.10]]


def test_settings_that_vary_only_across_cells_or_are_unrecorded_do_not_split_a_table():
    # Another shape at other epochs is another column, not a conflict; a results.json from before
    # the fingerprint key pools with the runs that have one.
    runs = [with_settings(result("lowrank", 1, 0.7, seed=s), 1e-3) for s in (0, 1)]
    runs += [with_settings(result("lowrank", 1, 0.6, shape="bunny"), 1e-3, epochs=20)]
    runs += [result("lowrank", 1, 0.74, seed=2) | {"preset": "mini"}]
    ((key, grouped),) = table_groups(runs)
    assert key == ("bof", "mini", "") and len(grouped) == 4
    (table,) = layout(runs)
    assert table.title == "bof · preset=mini"
    (ran,) = [row for row in table.rows if row.cells]
    assert ran.cells["lucy"].values == pytest.approx([0.7, 0.7, 0.74])
    assert ran.cells["bunny"].values == [0.6]


def test_fine_tuning_rows_count_the_adapter_factors_as_the_paper_does():
    total = 22_723_202
    runs = [
        {
            **result(method, 1, 0.7, omega=omega),
            "task": "glue",
            "adapter": "lora",
            "params": {"total": total, "lowrank": 4_608},
        }
        for method, omega in [("lora", None), ("sine_lora", 200.0)]
    ] + [{**result("dense", None, 0.8), "task": "glue", "params": {"total": total, "lowrank": 0}}]
    assert [(row.method, row.params) for row in summarise(runs)] == [
        ("dense", total),
        ("lora", 4_608),
        ("sine_lora", 4_608),
    ]


def test_only_completed_runs_are_loaded(tmp_path):
    for i, r in enumerate([result("lowrank", 1, 0.7), result("lowrank", 1, None, status="failed")]):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(r))
    assert len(load_results([tmp_path])) == 1
    assert len(load_results([tmp_path], completed_only=False)) == 2


def test_bd_deltas_of_sine_over_plain_across_ranks():
    # Params 100·k at k = 1, 10, 100 make log10(rate) 2, 3, 4; sine sits 1.5 above plain on a
    # straight line in log-rate, so BD = +1.5 and BD-rate = 10^(-1.5/4) - 1 (slope 4 per decade).
    runs = []
    for k in (1, 10, 100):
        plain = 10 + 4 * math.log10(k)
        runs += [result("lowrank", k, plain), result("sine_lowrank", k, plain + 1.5, omega=30.0)]
    runs.append(result("dense", None, 30.0))
    (delta,) = bd_deltas(summarise(runs))
    assert (delta.task, delta.data, delta.metric, delta.ranks) == (
        "bof",
        "lucy",
        "test/iou",
        [1, 10, 100],
    )
    assert delta.bd_metric == pytest.approx(1.5)
    assert delta.bd_rate == pytest.approx((10 ** (-1.5 / 4) - 1) * 100)


def test_bd_deltas_need_two_ranks_of_both_curves():
    runs = [result("lowrank", 1, 0.5), result("sine_lowrank", 1, 0.6, omega=30.0)]
    runs.append(result("lowrank", 5, 0.7))
    assert bd_deltas(summarise(runs)) == []


def probe_result(item: str, value: float, seed: int = 0, data_key: str | None = "probe") -> dict:
    """A run of a task the report has never seen, on data item ``task.probe=<item>``; it
    records its data key as a run does (``data_key=None``: as a hand-written file may not)."""
    config = {"_target_": "tasks.no_such_task.ProbeTask", "probe": item, "lr": 0.1}
    run = {**result("lowrank", 1, value, seed=seed), "task": "probe", "preset": "mini"}
    run["task_config"] = config
    return run if data_key is None else {**run, "data_key": data_key}


def test_a_new_task_gets_a_column_per_data_item_from_its_recorded_data_key():
    """The report reads the key off results.json: it imports no task (this one does not exist)."""
    runs = [probe_result(item, v, seed) for item, v, seed in
            [("a", 0.5, 0), ("a", 0.7, 1), ("b", 0.9, 0)]]  # fmt: skip
    ((key, grouped),) = table_groups(runs)  # task.probe is the column, not a setting
    assert key == ("probe", "mini", "") and len(grouped) == 3
    (row,) = summarise(runs)
    assert {item: cell.values for item, cell in row.cells.items()} == {"a": [0.5, 0.7], "b": [0.9]}


def test_a_run_that_records_no_data_key_is_one_column_and_never_pooled():
    runs = [probe_result(item, v, data_key=None) for item, v in [("a", 0.5), ("b", 0.9)]]
    groups = table_groups(runs)
    # Without a key, task.probe is a setting like any other: a and b in tables of their own.
    assert [(key, len(runs)) for key, runs in groups] == [
        (("probe", "mini", "task.probe=a"), 1),
        (("probe", "mini", "task.probe=b"), 1),
    ]
    cells = [summarise(runs)[0].cells for _, runs in groups]
    assert [{item: c.values for item, c in found.items()} for found in cells] == [
        {"probe": [0.5]},
        {"probe": [0.9]},
    ]


def test_a_results_json_from_before_data_key_was_recorded_gets_its_tasks_key_then():
    """``result`` writes a bof run as runs did before they recorded ``data_key``."""
    assert "data_key" not in result("lowrank", 1, 0.5)
    assert data_key(result("lowrank", 1, 0.5)) == "shape"
    runs = [result("lowrank", 1, 0.5, shape="lucy"), result("lowrank", 1, 0.7, shape="dragon")]
    (row,) = summarise(runs)
    assert {item: cell.values for item, cell in row.cells.items()} == {
        "lucy": [0.5],
        "dragon": [0.7],
    }


def test_import_sinelr_report_loads_neither_torch_nor_lightning():
    """The report reads JSON files: torch and Lightning (seconds of imports) are not its to load."""
    code = "import sinelr.report, sys; print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_records_its_tasks_data_key(tmp_path):
    assert dry_run(tmp_path / "bof", "task=bof", "rank=1")["data_key"] == "shape"
    assert "data_key" not in dry_run(tmp_path / "theory", "task=theory", "rank=1", "omega=10")


def moded(r: dict, given: str | float, learnt_to: list[float] | None = None) -> dict:
    """``r`` as a run of ``omega=<given>`` (``"auto"`` or a number), its ω learnt to
    ``learnt_to`` (one value per sine layer) where given: the keys docs/contract.md names."""
    layers = learnt_to or [r["omega"], r["omega"]]
    found = {
        **r,
        "fingerprint": {"omega": given, "lowrank": {"learn_omega": learnt_to is not None}},
        "omega_per_layer": {f"hidden.{i}": w for i, w in enumerate(layers)},
    }
    if learnt_to is not None:
        found["omega_start_per_layer"] = {f"hidden.{i}": r["omega"] for i in range(len(layers))}
    return found


def omega_runs() -> list[dict]:
    """Plain k=1, and sine k=1 started at ω = 70.8 four ways: given, auto, and each learnt
    (two seeds each, the learnt ones ending apart), so that only the mode tells them apart."""
    runs = [result("lowrank", 1, 0.70)]
    for seed in (0, 1):
        sine = result("sine_lowrank", 1, 0.80 + seed / 100, seed=seed, omega=70.8)
        runs += [
            moded(sine, 70.8),
            moded({**sine, "metric": {**sine["metric"], "value": 0.76}}, "auto"),
            moded(
                {**sine, "metric": {**sine["metric"], "value": 0.84}}, 70.8, [90.0, 100.0 + seed]
            ),
            moded(
                {**sine, "metric": {**sine["metric"], "value": 0.74}}, "auto", [60.0 + seed, 62.0]
            ),
        ]
    return runs


def test_auto_and_learnt_omega_runs_are_rows_of_their_own_not_pooled_with_a_given_omega():
    runs = omega_runs()
    ((key, grouped),) = table_groups(runs)  # learn_omega differs only across rows: one table
    assert key == ("bof", "unknown", "") and len(grouped) == len(runs)
    sine = [row for row in summarise(runs) if row.method == "sine_lowrank"]
    assert [(row.omega, row.omega_mode) for row in sine] == [
        (70.8, ""),
        (None, "auto"),  # the rule's ω is each cell's, not the row's
        (70.8, "learnt"),
        (None, "learnt from auto"),
    ]
    cells = [row.cells["lucy"] for row in sine]
    assert [cell.values for cell in cells] == [[0.80, 0.81], [0.76] * 2, [0.84] * 2, [0.74] * 2]
    assert [cell.omega for cell in cells] == [70.8] * 4
    # Where a learnt ω ended: the median of each run's layers (95.0, 95.5; 61.0, 61.5), then of
    # the seeds.
    assert [cell.omega_end for cell in cells] == [None, None, 95.25, 61.25]
    table = markdown(summarise(runs), scale=100).splitlines()[2:]
    assert [line.split(" | ")[-2:] for line in table] == [
        ["70.8", "+10.50 |"],
        ["auto 70.8", "+6.00 |"],
        ["learnt 70.8 → 95.2", "+14.00 |"],
        ["learnt from auto 70.8 → 61.2", "+4.00 |"],
    ]
    summary = summary_rows(layout(runs))
    found = {(r[SUMMARY_COLUMNS.index("omega_mode")], r[SUMMARY_COLUMNS.index("omega_end")])
             for r in summary if r[SUMMARY_COLUMNS.index("method")] == "sine_lowrank"}  # fmt: skip
    assert found == {("", None), ("auto", None), ("learnt", 95.25), ("learnt from auto", 61.25)}


def test_a_run_from_before_omega_modes_is_a_given_omega():
    assert [omega_mode(r) for r in omega_runs()[:5]] == [
        "",
        "",
        "auto",
        "learnt",
        "learnt from auto",
    ]
    assert omega_mode(result("sine_lowrank", 1, 0.8, omega=200.0)) == ""  # no fingerprint


def test_an_auto_row_names_each_cells_omega_where_the_rule_gave_the_items_different_ones():
    runs = [moded(result("sine_lowrank", 1, 0.8, omega=70.8), "auto"),
            moded(result("sine_lowrank", 1, 0.9, omega=45.1, shape="dragon"), "auto")]  # fmt: skip
    (table,) = layout(runs)
    (row,) = [row for row in table.rows if row.cells]
    assert (row.omega, row.omega_mode) == (None, "auto")
    page = render_markdown([table], [], {}, "")
    assert "| sine_lowrank | 1 | auto (paper 200) | 100 |" in page
    assert "| 80.00 · ω 70.8 | 90.70 |" in page and "| 90.00 · ω 45.1 | 94.60 |" in page


def test_bd_deltas_give_auto_a_curve_of_its_own():
    # As in test_bd_deltas_of_sine_over_plain_across_ranks: each sine curve a constant height
    # above plain on a straight line in log-rate, so the BD-metric is that height.
    runs = []
    for k in (1, 10, 100):
        plain = 10 + 4 * math.log10(k)
        runs += [result("lowrank", k, plain), result("sine_lowrank", k, plain + 1.5, omega=30.0)]
        runs.append(moded(result("sine_lowrank", k, plain + 0.5, omega=30.0 / k), "auto"))
    given, auto = bd_deltas(summarise(runs))
    assert (given.omega_mode, auto.omega_mode) == ("", "auto")
    assert given.bd_metric == pytest.approx(1.5) and auto.bd_metric == pytest.approx(0.5)
    assert given.text().startswith("sine over plain at ranks [1, 10, 100]")
    assert auto.text().startswith("sine (auto) over plain at ranks [1, 10, 100]")


def test_the_omega_plot_marks_where_auto_and_learnt_omega_fell_beside_the_sweep():
    runs = omega_runs() + [
        result("sine_lowrank", 1, v, omega=w) for w, v in [(20.0, 0.7), (300.0, 0.75)]
    ]
    (table,) = layout(runs)
    fig = omega_figure(table)
    (ax,) = fig.axes
    drawn = [(line.get_label(), line.get_marker(), line.get_markerfacecolor(),
              list(line.get_xdata()), [round(y, 6) for y in line.get_ydata()])
             for line in ax.lines]  # fmt: skip
    sweep = next(d for d in drawn if d[0] == "lucy sine_lowrank k=1")
    assert sweep[3] == [20.0, 70.8, 300.0]  # the given ω only
    # The markers (not in the legend, which has one grey entry per kind), at the means ×100
    # (Table 13's scale): auto a star at its ω; a learnt ω a hollow diamond where it started,
    # a filled one where it ended.
    marks = [
        (marker, face == "none", x, y) for label, marker, face, x, y in drawn if label[0] == "_"
    ]
    assert marks == [
        ("*", False, [70.8], [76.0]),
        ("D", True, [70.8], [84.0]),
        ("D", False, [95.25], [84.0]),
        ("D", True, [70.8], [74.0]),
        ("D", False, [61.25], [74.0]),
    ]
    arrows = sorted((a.xyann, a.xy) for a in ax.texts)
    assert arrows == [((70.8, 74.0), (61.25, 74.0)), ((70.8, 84.0), (95.25, 84.0))]
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["lucy sine_lowrank k=1", AUTO_LABEL, START_LABEL, END_LABEL]
    plt.close(fig)


def test_learnt_runs_alone_still_get_an_omega_plot_and_given_omegas_alone_none():
    only_given = [result("sine_lowrank", 1, 0.8, omega=200.0)]
    assert omega_figure(layout(only_given)[0]) is None  # one ω is no sweep, as before
    (table,) = layout([moded(result("sine_lowrank", 1, 0.8, omega=200.0), 200.0, [250.0, 250.0])])
    fig = omega_figure(table)
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["lucy sine_lowrank k=1", START_LABEL, END_LABEL]
    plt.close(fig)


def test_an_omega_sweep_at_two_budgets_gets_a_table_and_an_omega_plot_per_preset():
    """+experiment=nerf_budget_omega: the same ω grid at preset=mini and preset=midi. Pooled,
    the two budgets' best ω (here 300 at mini, 1400 at midi) would blur into one curve."""
    budgets = {"mini": {100.0: 0.6, 300.0: 0.7, 1400.0: 0.5}, "midi": {300.0: 0.8, 1400.0: 0.9}}
    runs = [
        {**result("sine_lowrank", 1, value, omega=omega), "preset": preset}
        for preset, curve in budgets.items()
        for omega, value in curve.items()
    ]
    tables = layout(runs)
    assert sorted(table.preset for table in tables) == ["midi", "mini"]
    for table in tables:
        fig = omega_figure(table)
        (ax,) = fig.axes
        (sweep,) = [line for line in ax.lines if line.get_label() == "lucy sine_lowrank k=1"]
        curve = budgets[table.preset]
        assert list(sweep.get_xdata()) == sorted(curve)
        assert [round(y, 6) for y in sweep.get_ydata()] == [100 * curve[w] for w in sorted(curve)]
        plt.close(fig)
