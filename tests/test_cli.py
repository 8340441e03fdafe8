"""run.py end to end: the commands of docs/contract.md and the results.json they write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hydra_plugins.sinelr_sweeper.table_sweeper import unique_jobs
from sinelr.layers import method_names

ROOT = Path(__file__).resolve().parents[1]

CONTRACT_KEYS = [
    "task", "method", "rank", "omega", "adapter", "params", "compression_rate", "metric",
    "metrics", "seed", "preset", "steps", "wall_time_s", "device", "status",
]  # fmt: skip
METHODS = set(method_names())  # the registry's, with the dense baseline

pytestmark = pytest.mark.slow


def assert_contract(results: dict) -> None:
    """results.json as docs/contract.md has it: extra keys allowed, none missing or renamed."""
    assert list(results)[: len(CONTRACT_KEYS)] == CONTRACT_KEYS
    assert results["method"] in METHODS
    assert results["status"] in {"completed", "dry_run", "failed"}
    assert set(results["params"]) == {"total", "trainable", "lowrank", "full_rank_total"}
    assert set(results["metric"]) == {"name", "value", "higher_is_better"}
    assert results["metric"]["name"]
    assert isinstance(results["metric"]["higher_is_better"], bool)
    assert results["device"] in {"cpu", "cuda"}
    params = results["params"]
    if params["full_rank_total"]:
        numerator = params["trainable"] if results["adapter"] else params["total"]
        assert results["compression_rate"] == pytest.approx(numerator / params["full_rank_total"])
    if results["status"] == "completed":
        value = results["metric"]["value"]
        assert isinstance(value, float)
        assert results["metrics"][results["metric"]["name"]] == value
    else:
        assert results["metric"]["value"] is None


def test_bof_smoke_trains_and_writes_results(run_cli):
    run = run_cli("task=bof", "rank=1", "omega=200", "preset=smoke")
    assert run.returncode == 0, run.output
    results = run.results
    assert_contract(results)
    assert results["status"] == "completed"
    assert (results["task"], results["method"], results["rank"], results["omega"]) == (
        "bof", "sine_lowrank", 1, 200.0,
    )  # fmt: skip
    assert results["params"]["total"] == 2817
    assert results["steps"] > 0
    assert 0.0 <= results["metric"]["value"] <= 1.0
    assert results["diagnostics"]["rank"]["hidden.0"]["numerical_rank"] > 1
    assert (run.run_dir / "csv" / "metrics.csv").exists()


def test_theory_smoke_writes_figures_and_tables(run_cli):
    run = run_cli("task=theory", "preset=smoke")
    assert run.returncode == 0, run.output
    results = run.results
    assert_contract(results)
    assert results["status"] == "completed" and results["method"] == "sine_lowrank"
    value = results["metric"]["value"]
    # At the paper's ω the sine must lift rank well above the plain factorisation's k/min(d).
    assert value > 5 * results["metrics"]["theory/plain_rank_fraction"]
    for name in [
        "rank_vs_omega.csv",
        "paper_frequencies.csv",
        "numerical_rank_vs_omega.png",
        "stable_rank_vs_omega.png",
        "heatmaps.png",
    ]:
        assert (run.run_dir / name).stat().st_size > 0, name


def test_theory_rank_option_restricts_the_study(run_cli):
    run = run_cli("task=theory", "preset=smoke", "rank=5", "omega=1000")
    assert run.returncode == 0, run.output
    results = run.results
    assert (results["rank"], results["omega"]) == (5, 1000.0)
    rows = (run.run_dir / "paper_frequencies.csv").read_text().splitlines()
    assert rows[0].startswith("task,d_out,d_in,k,omega") and len(rows) == 2
    assert rows[1].split(",")[3:5] == ["5", "1000.0"]


def test_dry_run_needs_no_data(run_cli, tmp_path):
    run = run_cli("task=bof", "rank=5", "omega=paper", "dry_run=true", data_dir=tmp_path / "void")
    assert run.returncode == 0, run.output
    results = run.results
    assert_contract(results)
    assert results["status"] == "dry_run"
    assert (results["omega"], results["params"]["total"]) == (50.0, 6913)
    assert results["steps"] == 0


def test_paper_parameter_counts_as_one_multirun(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable, "run.py", "-m", "task=bof", "rank=null,1,2,5,20", "omega=paper",
            "dry_run=true", f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "SINELR_DATA": str(tmp_path / "void")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = {}
    for path in sorted(sweep_dir.glob("*/results.json")):
        results = json.loads(path.read_text())
        assert_contract(results)
        found[results["rank"]] = (results["method"], results["params"]["total"])
    assert found == {
        None: ("dense", 132_865),
        1: ("sine_lowrank", 2_817),
        2: ("sine_lowrank", 3_841),
        5: ("sine_lowrank", 6_913),
        20: ("sine_lowrank", 22_273),
    }


def test_table_sweeper_runs_the_dense_baseline_once():
    jobs = [[f"rank={r}", f"omega={w}"] for r in ("null", "1") for w in ("null", "paper")]
    assert unique_jobs(jobs) == [
        ["rank=null", "omega=null"],
        ["rank=1", "omega=null"],
        ["rank=1", "omega=paper"],
    ]
    assert unique_jobs([["rank=null", "omega=paper"]]) == [["rank=null", "omega=null"]]


def test_bad_rank_fails_with_a_clear_message(run_cli):
    run = run_cli("task=bof", "rank=0", "preset=smoke")
    assert run.returncode != 0
    assert "rank must be a positive integer" in run.output
    results = run.results
    assert_contract(results)
    assert results["status"] == "failed" and "rank" in results["error"]


def test_omega_paper_without_a_paper_value_lists_the_ranks(run_cli):
    run = run_cli("task=bof", "rank=3", "omega=paper", "dry_run=true")
    assert run.returncode != 0
    assert "has ranks 1, 2, 5, 20" in run.output
    assert run.results["status"] == "failed"


def test_a_preset_the_task_lacks_fails_naming_the_ones_it_has(run_cli):
    """commonsense has no CPU mini: the run stops before anything is built (not LLaMA-3-8B in
    float32 under the name of a mini), and says which presets there are."""
    run = run_cli(
        "task=commonsense", "adapter=lora", "rank=8", "preset=mini", env={"HF_HUB_OFFLINE": "1"}
    )
    assert run.returncode != 0
    assert "task=commonsense has no preset=mini" in run.output
    assert "its presets are: paper, smoke" in run.output
    results = run.results
    assert results["status"] == "failed" and results["params"]["total"] == 0  # nothing built
    assert results["wall_time_s"] < 5  # the driver's own time, imports aside: it stopped at once


def test_missing_mesh_says_where_it_looked(run_cli, tmp_path):
    run = run_cli("task=bof", "rank=1", "preset=smoke", "task.shape=bunny", data_dir=tmp_path / "d")
    assert run.returncode != 0
    assert str(tmp_path / "d" / "meshes" / "bunny.ply") in run.output
    assert "FileNotFoundError" in run.results["error"]


def test_bof_on_a_real_mesh(run_cli, shared_data):
    run = run_cli("task=bof", "rank=2", "preset=smoke", "task.shape=bunny", data_dir=shared_data)
    assert run.returncode == 0, run.output
    assert run.results["status"] == "completed"
    assert run.results["task_config"]["shape"] == "bunny"


def test_unknown_task_is_refused(run_cli):
    run = run_cli("task=imagenet22k")
    assert run.returncode != 0
    assert "imagenet22k" in run.output and "Available options" in run.output


def test_the_composed_config_prints_resolved():
    """``--cfg job --resolve`` resolves sinelr's own interpolations (the mini's precision)."""
    proc = subprocess.run(
        [sys.executable, "run.py", "task=bof", "preset=mini", "--cfg", "job", "--resolve"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "precision: bf16-mixed" in proc.stdout or "precision: 32-true" in proc.stdout


def test_task_is_required(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "task" in proc.stderr
