"""The equal-budget protocol (issue #36): each arm's winner is chosen on validation among the same
number of trials as its rival's, then scored at seeds the search never used."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from scipy import stats

from hydra_plugins.sinelr_sweeper.equal_budget_sweeper import EqualBudgetSweeper
from scripts.equal_budget_summary import main as summary_main
from scripts.report import main as report_main
from sinelr.equal_budget import (
    ProtocolError,
    Trial,
    at_edge,
    best_trial,
    merged,
    read_selection,
    reason,
    score,
)
from tests.helpers import compose_config


def test_the_winner_is_the_best_validation_mean_and_a_failed_trial_ranks_last():
    trials = [
        Trial(["task.lr=1e-3"], "val/acc", [0.80, 0.90]),  # mean 0.85
        Trial(["task.lr=3e-3"], "val/acc", [0.95, None]),  # one seed failed: last
        Trial(["task.lr=1e-2"], "val/acc", [0.86, 0.86]),  # mean 0.86: the winner
    ]
    winner = best_trial(trials)
    assert winner is trials[2]
    why = reason(winner, trials)
    assert why.startswith("highest mean val/acc over the search seeds: 0.86")
    assert "task.lr=1e-3: 0.85" in why and "1 trial(s) failed" in why


def test_a_lower_is_better_selection_picks_the_lowest():
    trials = [Trial([f"omega={w}"], "val/loss", [v], False) for w, v in ((30, 0.4), (100, 0.3))]
    assert best_trial(trials).overrides == ["omega=100"]
    assert reason(best_trial(trials), trials).startswith("lowest mean val/loss")


def test_an_arm_whose_every_trial_failed_stops_the_protocol():
    with pytest.raises(ProtocolError, match="every trial of an arm failed: omega=30"):
        best_trial([Trial(["omega=30"], None, [None])])


def test_ties_keep_the_grids_first_setting():
    trials = [Trial([f"omega={w}"], "val/acc", [0.5]) for w in (30, 100)]
    assert best_trial(trials).overrides == ["omega=30"]


def test_an_arms_setting_replaces_the_cells_value_of_the_same_key():
    assert merged(["task.shape=lucy", "rank=1"], ["rank=null", "task.lr=1e-3"]) == [
        "task.shape=lucy", "rank=null", "task.lr=1e-3",
    ]  # fmt: skip


def test_read_selection_takes_the_validation_metric_of_a_completed_run_only(tmp_path: Path):
    selection = {"name": "val/acc", "value": 0.7, "higher_is_better": True, "independent": True}
    (tmp_path / "results.json").write_text(
        json.dumps({"status": "completed", "selection": selection, "metric": {"value": 0.9}})
    )
    assert read_selection(tmp_path) == selection
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "selection": selection}))
    assert read_selection(tmp_path) == {**selection, "value": None}
    assert read_selection(tmp_path / "missing") == {}


def test_a_trial_says_whether_its_selection_was_apart_from_the_test_data():
    held_out = {"name": "val/acc", "value": 0.7, "higher_is_better": True, "independent": True}
    fitted = {"name": "test/iou", "value": 0.9, "higher_is_better": True, "independent": False}
    assert score(["omega=30"], [held_out, held_out]).independent
    assert not score(["omega=30"], [fitted]).independent
    failed = score(["omega=30"], [held_out, {}])  # one seed wrote nothing: the trial failed
    assert failed.selection == "val/acc" and failed.scores == [0.7, None] and failed.mean is None


def sweeper(**overrides) -> EqualBudgetSweeper:
    settings = {
        "arms": {"plain": {"omega": "null", "task.lr": "1e-3,3e-3"}, "sine": {"omega": "30,100"}},
        "search_seeds": [0],
        "seeds": [1, 2],
    }
    return EqualBudgetSweeper(**{**settings, **overrides})


def test_a_seed_both_searched_and_tested_is_refused():
    with pytest.raises(ProtocolError, match=r"seeds \[0\] are both searched and tested"):
        sweeper(seeds=[0, 1])


def test_a_single_arm_is_refused():
    with pytest.raises(ProtocolError, match="at least two arms"):
        sweeper(arms={"sine": {"omega": "30,100"}})


def test_unequal_budgets_are_refused(monkeypatch):
    unequal = sweeper(arms={"plain": {"task.lr": "1e-3,3e-3,1e-2"}, "sine": {"omega": "30,100"}})
    monkeypatch.setattr(unequal, "_grid", lambda o: [[x] for x in o[0].split("=")[1].split(",")])
    with pytest.raises(ProtocolError, match=r"unequal tuning budgets \{'plain': 3, 'sine': 2\}"):
        unequal.arm_trials()


@pytest.mark.parametrize(
    "experiment", ["equal_budget_bof_k1", "equal_budget_vit", "equal_budget_glue"]
)
def test_each_experiment_gives_its_arms_the_same_budget(experiment):
    cfg = compose_config(f"+experiment={experiment}", hydra=True)
    arms = cfg.hydra.sweeper.arms
    sizes = {
        name: len([v for values in arm.values() for v in str(values).split(",")])
        - (len(arm) - 1)  # an arm's fixed keys (omega: null) are one value each
        for name, arm in arms.items()
    }
    assert len(set(sizes.values())) == 1 and next(iter(sizes.values())) == 4
    assert not set(cfg.hydra.sweeper.search_seeds) & set(cfg.hydra.sweeper.seeds)
    assert len(cfg.hydra.sweeper.seeds) >= 3


def test_the_glue_experiment_selects_on_held_out_examples():
    cfg = compose_config("+experiment=equal_budget_glue", "preset=mini")
    assert cfg.task.protocol == "sora" and cfg.trainer.limit_val_batches == 1.0


@pytest.mark.slow
def test_one_command_searches_tests_and_the_report_prints_the_gap(run_cli, tmp_path, capsys):
    """The protocol end to end on bof's smoke preset: 4 + 4 trials at seed 0, each winner at
    seeds 1-3, equal_budget.json naming each winner, and the report's paired gap."""
    sweep = tmp_path / "eb"
    run = run_cli(
        "-m", "+experiment=equal_budget_bof_k1", "preset=smoke",
        "hydra.sweeper.params={task.shape:trefoil}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert run.returncode == 0, run.output
    record = json.loads((sweep / "equal_budget.json").read_text())
    (cell,) = record["cells"]
    assert set(cell["arms"]) == {"plain", "sine"}
    for arm in cell["arms"].values():
        assert len(arm["trials"]) == 4 and arm["why"]
    assert len(list((sweep / "search").glob("*/results.json"))) == 8
    tested = [json.loads(p.read_text()) for p in (sweep / "test").glob("*/results.json")]
    assert sorted(r["seed"] for r in tested) == [1, 1, 2, 2, 3, 3]
    assert report_main([str(sweep / "test"), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "sine − plain" in printed and re.search(r"[+-]\d+\.\d+ \[", printed)


def test_the_summary_pairs_each_arms_winner_with_the_sine_by_seed(tmp_path, capsys):
    cell = ["task.shape=lucy", "rank=1"]
    winners = {"plain": ["omega=null", "task.lr=0.003"], "sine": ["omega=300"]}
    record = {
        "search_seeds": [0], "seeds": [1, 2, 3],
        "cells": [{"cell": cell, "arms": {
            arm: {"winner": w, "why": "", "trials": [
                {"overrides": w, "selection": "val/iou", "scores": [0.5], "mean": 0.5},
            ]} for arm, w in winners.items()
        }}],
    }  # fmt: skip
    # The plain arm's test directories are recorded (as the sweeper does); the sine's are not (a
    # record from before it did), so its runs are found by their commands.
    record["cells"][0]["arms"]["plain"]["tests"] = [
        str(tmp_path / "test" / f"plain{seed}") for seed in (1, 2, 3)
    ]
    (tmp_path / "equal_budget.json").write_text(json.dumps(record))
    # The sweep's own config, as Hydra saves it: which overrides its job directories leave out.
    excluded = {"exclude_keys": ["skip_done", "logger"]}
    (tmp_path / "multirun.yaml").write_text(
        json.dumps({"hydra": {"job": {"config": {"override_dirname": excluded}}}})
    )
    scores = {"plain": [0.70, 0.72, 0.71], "sine": [0.80, 0.83, 0.81]}
    for arm, values in scores.items():
        for seed, value in zip((1, 2, 3), values, strict=True):
            run_dir = tmp_path / "test" / f"{arm}{seed}"
            run_dir.mkdir(parents=True)
            # The sine's runs were typed with overrides that change nothing they compute.
            extra = ["skip_done=true", "logger=csv"] if arm == "sine" else []
            command = [*cell, *winners[arm], f"seed={seed}", *extra]
            result = {"status": "completed", "seed": seed, "metric": {"value": value},
                      "provenance": {"command": command}, "diagnostics": {}}  # fmt: skip
            (run_dir / "results.json").write_text(json.dumps(result))
    assert summary_main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    # Paired by seed: differences 0.10, 0.11, 0.10 (x100): mean 10.33, t(2) interval.
    diffs = [10.0, 11.0, 10.0]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(diffs) / 3**0.5
    mean = statistics.fmean(diffs)
    assert f"+10.33 [{mean - half:.2f}, {mean + half:.2f}]" in printed
    assert "| plain | omega=null task.lr=0.003 | 71.00 ± 1.00 (3)" in printed
    assert summary_main([str(tmp_path / "test")]) == 2  # not a sweep: one line, status 2


def test_a_winner_at_the_edge_of_its_grid_is_flagged():
    trials = [
        {"overrides": [f"task.lr={lr}"], "mean": mean}
        for lr, mean in (("1e-3", 0.5), ("3e-3", 0.6), ("1e-2", 0.7))
    ]
    assert at_edge({"winner": ["task.lr=1e-2"], "trials": trials})
    assert at_edge({"winner": ["task.lr=1e-3"], "trials": trials})
    assert not at_edge({"winner": ["task.lr=3e-3"], "trials": trials})
    tied = [{**t, "mean": 0.5} for t in trials]  # all tied: the first won by the tie rule only
    assert not at_edge({"winner": ["task.lr=1e-3"], "trials": tied})
