"""Sweeps: experiment files, failure-tolerant multiruns, skip_done, ω search, launchers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.sinelr_sweeper.table_sweeper import TableSweeper, available_jobs
from sinelr.fingerprint import fingerprints
from sinelr.report.publish import results_table
from sinelr.results import RESULTS_FILE, Metric, RunResult
from sinelr.resume import completed_result
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
PRESETS = ("smoke", "mini", "paper")


def multirun(*overrides: str, sweep_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``run.py -m`` in a subprocess, offline, its sweep in ``sweep_dir``."""
    env = {
        **os.environ,
        "SINELR_CACHE": str(sweep_dir.parent / "cache"),
        "SINELR_DATA": str(sweep_dir.parent / "no-data"),
        "WANDB_MODE": "offline",
    }
    return subprocess.run(
        [
            sys.executable, "run.py", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}",
            "trainer.enable_progress_bar=false",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def sweep_results(sweep_dir: Path) -> dict[str, dict]:
    """Each job directory's name (its overrides) → its results.json."""
    return {
        path.parent.name: json.loads(path.read_text())
        for path in sorted(sweep_dir.glob(f"*/{RESULTS_FILE}"))
    }


# -- experiment files ---------------------------------------------------------------------------
def test_every_paper_result_has_an_experiment_file():
    assert {"fig3_theory", "table13_bof", "table3_nerf", "table1_glue", "fig7_nerf_omega",
            "bof_omega_ablation"} <= set(EXPERIMENTS)  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_its_sweep_parses(experiment: str, preset: str):
    cfg = compose_config(f"+experiment={experiment}", f"preset={preset}", hydra=True)
    assert cfg.preset == preset
    OmegaConf.to_container(cfg.task, resolve=True)  # every task setting resolves at this preset
    params = cfg.hydra.sweeper.params
    assert params, f"{experiment} sweeps nothing"
    parser = OverridesParser.create()
    overrides = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
    (jobs,) = TableSweeper.split_arguments(overrides, None)
    arms = cfg.hydra.sweeper.get("arms")
    if arms:  # the equal-budget protocol: its arms' trials are the jobs of each cell
        jobs = [
            [*jobs[-1], *(f"{key}={str(values).split(',')[-1]}" for key, values in arm.items())]
            for arm in arms.values()
        ]
    assert len(jobs) >= 2
    # Each job's overrides are legal for the composed config (keys exist, groups have options).
    compose_config(f"+experiment={experiment}", f"preset={preset}", *jobs[-1])
    if "omega" in params:  # a factorised table: plain and sine runs side by side
        omegas = str(params.omega).split(",")
        assert "null" in omegas and any(w != "null" for w in omegas), omegas


def table_jobs(experiment: str, data_dir: Path) -> list[list[str]]:
    """The jobs the experiment's sweep runs with ``paths.data_dir=data_dir`` (none launched)."""
    cfg = compose_config(f"+experiment={experiment}", f"paths.data_dir={data_dir}", hydra=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    params = [f"{key}={value}" for key, value in sweeper["params"].items()]
    overrides = OverridesParser.create().parse_overrides(params)
    (jobs,) = TableSweeper.split_arguments(overrides, None, sweeper.get("optional"))
    return jobs


@pytest.mark.parametrize("experiment", ["table13_bof", "bof_omega_ablation"])
def test_the_thai_statue_runs_where_its_mesh_is(tmp_path: Path, experiment: str):
    without = table_jobs(experiment, tmp_path)
    assert {o for job in without for o in job if o.startswith("task.shape=")} == {
        "task.shape=lucy", "task.shape=dragon",
    }  # fmt: skip
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "thai.ply").write_text("ply\n")
    with_thai = table_jobs(experiment, tmp_path)
    thai = [job for job in with_thai if "task.shape=thai" in job]
    assert len(thai) == len(without) / 2 and len(with_thai) == len(without) + len(thai)


def test_jobs_needing_a_missing_file_are_left_out_with_one_warning(tmp_path: Path, caplog):
    present = tmp_path / "here.ply"
    present.write_text("ply\n")
    jobs = [["s=a", "k=1"], ["s=b", "k=1"], ["s=a", "k=2"], ["s=c", "k=1"]]
    optional = {"s=a": str(tmp_path / "absent.ply"), "s=b": str(present)}
    assert available_jobs(jobs, optional) == [["s=b", "k=1"], ["s=c", "k=1"]]
    assert [r.getMessage() for r in caplog.records] == [
        f"s=a: 2 job(s) left out, {tmp_path / 'absent.ply'} does not exist"
    ]


# -- failure tolerance and skip_done -----------------------------------------------------------
def test_completed_result_is_reused_only_for_the_same_configuration(tmp_path: Path):
    cfg = compose_config("task=theory", "preset=smoke", "rank=1")
    result = RunResult(
        task="theory", method="sine_lowrank", rank=1, omega=None, adapter=None, seed=0,
        preset="smoke", metric=Metric("m", 0.5, True), metrics={"m": 0.5}, status="completed",
        fingerprint=fingerprints(cfg).result,
    )  # fmt: skip
    result.write(tmp_path)
    reused = completed_result(tmp_path, fingerprints(cfg).result)
    assert reused is not None and reused.to_json() == result.to_json()

    other = compose_config("task=theory", "preset=smoke", "rank=1", "task.trials=2")
    assert completed_result(tmp_path, fingerprints(other).result) is None
    longer = compose_config("task=theory", "preset=smoke", "rank=1", "trainer.max_epochs=5")
    assert completed_result(tmp_path, fingerprints(longer).result) is None
    # Display settings do not change a result: it is still reused.
    quiet = compose_config(
        "task=theory", "preset=smoke", "rank=1", "trainer.enable_progress_bar=false"
    )
    assert completed_result(tmp_path, fingerprints(quiet).result) is not None

    result.status, result.error = "failed", "ValueError: boom"
    result.write(tmp_path)
    assert completed_result(tmp_path, fingerprints(cfg).result) is None


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_multirun(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    proc = multirun("task=theory", "preset=smoke", "rank=1,0,5", sweep_dir=sweep_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "1 of 3 jobs failed" in output and "rank=0" in output, output
    found = {name: r["status"] for name, r in sweep_results(sweep_dir).items()}
    assert found == {
        "preset=smoke,rank=0,task=theory": "failed",
        "preset=smoke,rank=1,task=theory": "completed",
        "preset=smoke,rank=5,task=theory": "completed",
    }
    failed = sweep_results(sweep_dir)["preset=smoke,rank=0,task=theory"]
    assert "rank must be a positive integer" in failed["error"]


@pytest.mark.slow
def test_a_sweep_run_again_with_skip_done_reuses_completed_jobs(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    args = ("task=theory", "preset=smoke", "rank=1,5", "skip_done=true")
    first = multirun(*args, sweep_dir=sweep_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/*.*") if p.suffix != ".log"}
    texts = {p: p.read_text() for p in sweep_dir.glob(f"*/{RESULTS_FILE}")}
    assert len(texts) == 2

    again = multirun(*args, sweep_dir=sweep_dir)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert output.count("already completed") == 2, output
    # Nothing was computed again: results.json, the CSVs and figures are the same files.
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert {p: p.read_text() for p in texts} == texts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "jobs", "extra"),
    [
        # k = 1, 5 × plain and six ω. Dry runs: 14 trained NeRF smoke jobs take minutes, and a
        # NeRF smoke run is trained end to end by test_nerf.
        ("fig7_nerf_omega", 2 * 7, ["dry_run=true"]),
        # lucy, dragon (no Thai statue) × dense, plain, six ω; trained (seconds each)
        ("bof_omega_ablation", 2 * (1 + 7), []),
    ],
)
def test_omega_ablation_sweeps_complete_at_smoke(
    tmp_path: Path, shared_data, experiment, jobs, extra
):
    sweep_dir = tmp_path / "sweep"
    proc = multirun(f"+experiment={experiment}", "preset=smoke", f"paths.data_dir={shared_data}",
                    *extra, sweep_dir=sweep_dir, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = sweep_results(sweep_dir)
    status = "dry_run" if extra else "completed"
    assert len(found) == jobs and {r["status"] for r in found.values()} == {status}
    ranks = {1, 5} if experiment == "fig7_nerf_omega" else {None, 1}
    assert {r["rank"] for r in found.values()} == ranks


# -- W&B ----------------------------------------------------------------------------------------
def test_results_table_has_a_row_per_item_and_one_for_the_run():
    metrics = {"test/psnr": 21.0, "test/psnr/view_000": 20.0, "test/ssim/view_000": 0.5,
               "test/psnr/view_008": 22.0}  # fmt: skip
    columns, rows = results_table(metrics)
    assert columns == ["item", "test/psnr", "test/ssim"]
    assert rows == [["all", 21.0, None], ["view_000", 20.0, 0.5], ["view_008", 22.0, None]]


@pytest.mark.slow
def test_wandb_offline_run_holds_the_results_table_and_images(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    proc = multirun(
        "+experiment=table13_bof", "preset=smoke", "task.shape=trefoil", "rank=1",
        "omega=paper", "logger=wandb", sweep_dir=sweep_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ((job, results),) = sweep_results(sweep_dir).items()
    job_dir = sweep_dir / job
    (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
    # The table: one row "all" with every metric of results.json (wandb's own JSON format).
    (table_file,) = (run_dir / "files" / "media" / "table").glob("results_*.table.json")
    table = json.loads(table_file.read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert row["item"] == "all"
    assert {k: row[k] for k in results["metrics"]} == results["metrics"]
    # The image: bof's occupancy slices, as the run wrote them.
    (image,) = (run_dir / "files" / "media" / "images").rglob("slices_*.png")
    from PIL import Image

    with Image.open(image) as logged, Image.open(job_dir / "slices.png") as written:
        assert logged.size == written.size
    # Group, tags and summary live in the run's protobuf log; wandb 0.31 ships no reader for
    # it, so look for their strings in it.
    log = next(run_dir.glob("run-*.wandb")).read_bytes()
    for text in ["table13_bof", "sine_lowrank", "rank=1", "preset=smoke", "compression_rate"]:
        assert text.encode() in log, text


# -- ω search and launchers -------------------------------------------------------------------
@pytest.mark.slow
def test_omega_optuna_search_maximises_the_run_metric(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    proc = multirun(
        "task=theory", "preset=smoke", "hparams_search=omega_optuna",
        "hydra.sweeper.n_trials=2", sweep_dir=sweep_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = sweep_results(sweep_dir)
    assert sorted(trials) == ["0", "1"]  # trial dirs are numbered
    omegas = [r["omega"] for r in trials.values()]
    assert all(10 <= w <= 3000 for w in omegas) and omegas[0] != omegas[1]
    assert {r["rank"] for r in trials.values()} == {5}  # the search's fixed rank
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    values = {r["omega"]: r["metric"]["value"] for r in trials.values()}
    assert best.best_value == max(values.values())  # maximised, as every task's metric wants
    assert values[best.best_params.omega] == best.best_value


def test_omega_optuna_replaces_the_grid_sweeper():
    grid = compose_config("task=bof", hydra=True).hydra
    assert grid.sweeper._target_.endswith("TableSweeper")
    search = compose_config("task=bof", "hparams_search=omega_optuna", hydra=True).hydra
    assert search.sweeper._target_.endswith("OptunaSweeper")
    assert search.sweeper.direction == "maximize"
    assert search.sweeper.params.omega == "tag(log, interval(10, 3000))"


def test_submitit_slurm_launcher_config_resolves():
    cfg = compose_config("task=bof", "hydra/launcher=submitit_slurm", hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["submitit_folder"].endswith("/.submitit/%j")


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_and_survives_a_failure(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    proc = multirun(
        "task=theory", "preset=smoke", "rank=1,0,5", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", sweep_dir=sweep_dir,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "1 of 3 jobs failed" in output, output
    assert "Joblib.Parallel(n_jobs=2" in output, output
    found = {name: r["status"] for name, r in sweep_results(sweep_dir).items()}
    assert sorted(found.values()) == ["completed", "completed", "failed"], found


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_result(run_cli):
    run = run_cli(
        "task=bof", "preset=smoke", "rank=1", "omega=100", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "task.eval_batch_size=1000",
    )  # fmt: skip
    assert run.returncode == 0, run.output
    assert run.output.count("completed: ") == 1, run.output  # rank 1 writes nothing
    assert list(run.run_dir.rglob("results.json")) == [run.run_dir / "results.json"]
    assert run.results["status"] == "completed"
    assert (run.run_dir / "train_ddp_process_1.log").is_file()  # a second process did train
    # Both processes test the whole grid (bof fails a run whose test saw part of it), so the
    # slices (and surface, where the prediction crosses 0.5) rank 0 writes are of the whole grid.
    assert (run.run_dir / "slices.png").is_file()
