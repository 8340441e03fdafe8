"""Tables from results.json: grouping, seed pooling, the sine − plain column, and the data
item asked of each run's Task class."""

from __future__ import annotations

import json
import logging
import math

import pytest

from sinelr.report import bd_deltas, layout, load_results, markdown, summarise, table_groups
from sinelr.report.load import task_class
from sinelr.report.model import lines, sine_pair
from sinelr.task import Task
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
    assert table[3].endswith("| 72.00 ± 2.83 (2) | 82.00 ± 2.83 (2) | 200 | +10.00 |")


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


class ProbeTask(Task):
    """A task the report has never seen (never run: only named by results.json files); its
    data item is ``task.probe``."""

    data_key = "probe"


def probe_result(target: str, item: str, value: float, seed: int = 0) -> dict:
    return {**result("lowrank", 1, value, seed=seed), "task": "probe", "preset": "mini",
            "task_config": {"_target_": target, "probe": item, "lr": 0.1}}  # fmt: skip


def test_a_new_task_gets_a_column_per_data_item_from_its_data_key():
    target = f"{__name__}.ProbeTask"
    runs = [probe_result(target, item, v, seed) for item, v, seed in
            [("a", 0.5, 0), ("a", 0.7, 1), ("b", 0.9, 0)]]  # fmt: skip
    ((key, grouped),) = table_groups(runs)  # task.probe is the column, not a setting
    assert key == ("probe", "mini", "") and len(grouped) == 3
    (row,) = summarise(runs)
    assert {item: cell.values for item, cell in row.cells.items()} == {"a": [0.5, 0.7], "b": [0.9]}


def test_a_run_of_a_task_that_cannot_be_imported_is_one_column_and_never_pooled(caplog):
    target = "tasks.no_such_task.NoSuchTask"
    task_class.cache_clear()
    runs = [probe_result(target, item, v) for item, v in [("a", 0.5), ("b", 0.9)]]
    with caplog.at_level(logging.WARNING, logger="sinelr.report.load"):
        groups = table_groups(runs)
    assert f"cannot import {target}" in caplog.text
    # Without the class, task.probe is a setting like any other: a and b in tables of their own.
    assert [(key, len(runs)) for key, runs in groups] == [
        (("probe", "mini", "task.probe=a"), 1),
        (("probe", "mini", "task.probe=b"), 1),
    ]
    cells = [summarise(runs)[0].cells for _, runs in groups]
    assert [{item: c.values for item, c in found.items()} for found in cells] == [
        {"probe": [0.5]},
        {"probe": [0.9]},
    ]


def test_a_recorded_data_key_needs_no_task_class():
    """Runs record their task's data_key; the report reads it without importing the task."""
    target = "tasks.no_such_task.NoSuchTask"  # would warn and pool nothing if it were asked
    runs = [{**probe_result(target, item, v), "data_key": "probe"} for item, v in [("a", 0.5),
            ("b", 0.9)]]  # fmt: skip
    ((_, grouped),) = table_groups(runs)
    (row,) = summarise(grouped)
    assert {item: cell.values for item, cell in row.cells.items()} == {"a": [0.5], "b": [0.9]}


def test_a_run_records_its_tasks_data_key(tmp_path):
    assert dry_run(tmp_path / "bof", "task=bof", "rank=1")["data_key"] == "shape"
    assert "data_key" not in dry_run(tmp_path / "theory", "task=theory", "rank=1", "omega=10")
