"""Runs that survive: resume after a kill, non-finite guard, bad input, safe files, determinism."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import warnings

import lightning as L
import pytest
import torch
import trimesh
from hydra.errors import ConfigCompositionException
from lightning.pytorch.demos.boring_classes import BoringModel

from sinelr.callbacks import NonFiniteError, NonFiniteGuard
from sinelr.checkpoint import CHECKPOINT_DIR, CheckpointError, LastCheckpoint, read_checkpoint
from sinelr.data import require_one_step_per_batch
from sinelr.io import atomic_write, atomic_write_json
from sinelr.loggers import ResumableCSVLogger, network_reachable, wandb_logger
from sinelr.plan import checkpoint_intervals
from sinelr.results import RESULTS_FILE
from sinelr.resume import check_checkpoint
from tests.helpers import (
    assert_resumes_to_the_uninterrupted_result,
    dry_run,
    metrics_log,
    run_in_process,
)

# Long enough (512 steps, a few seconds) to be killed mid-epoch; checkpoints every 20 steps.
RESUMABLE = [
    "task=bof", "rank=2", "omega=100", "preset=smoke", "task.resolution=32",
    "task.batch_size=256", "trainer.max_epochs=4", "checkpoint.every_n_train_steps=20",
    "checkpoint.every_n_epochs=null",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("continue_with", ["resume=true", "skip_done=true"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(run_cli, continue_with):
    """``skip_done=true`` is how a sweep run again continues its cut jobs."""
    # killed mid-epoch: an epoch has 32³/256 = 128 steps
    assert_resumes_to_the_uninterrupted_result(
        run_cli, RESUMABLE, steps=512, kill_before_step=128, continue_with=continue_with
    )


@pytest.mark.slow
def test_same_seed_same_metric_other_seed_other_run(run_cli):
    first, second = run_cli(*RESUMABLE), run_cli(*RESUMABLE)
    other = run_cli(*RESUMABLE, "seed=1")
    for run in (first, second, other):
        assert run.returncode == 0, run.output
    assert first.results["metric"]["value"] == second.results["metric"]["value"]
    assert first.results["metrics"] == second.results["metrics"]
    assert first.results["metrics"]["train/loss"] != other.results["metrics"]["train/loss"]


# In-process runs (bof's smoke preset trains in about a second): the driver raises what run.py
# prints and writes the same results.json; test_cli.py checks the printing.


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    original = run_in_process(tmp_path / "original", "task=bof", "rank=1", "omega=200",
                              "preset=smoke")  # fmt: skip
    assert original["status"] == "completed"
    checkpoint = tmp_path / "original" / CHECKPOINT_DIR / "last.ckpt"
    assert checkpoint.exists()
    other = ["task=bof", "rank=2", "omega=200", "preset=smoke", f"ckpt_path={checkpoint}"]
    with pytest.raises(CheckpointError, match="different configuration") as error:
        run_in_process(tmp_path / "other", *other)
    assert "rank: 1 (checkpoint) vs 2 (now)" in str(error.value)
    assert json.loads((tmp_path / "other" / RESULTS_FILE).read_text())["status"] == "failed"


def test_a_missing_or_foreign_ckpt_path_says_what_to_pass(tmp_path):
    missing = tmp_path / "absent.ckpt"
    with pytest.raises(CheckpointError, match=r"does not exist: check ckpt_path=, or pass resume"):
        check_checkpoint(missing, {})
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"no sinelr run fingerprint .*as ckpt_path="):
        check_checkpoint(foreign, {})


class _CheckpointProbe(L.Callback):
    """The step ``last.ckpt`` holds at the start of each epoch (None: no file yet)."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen.append(read_checkpoint(self.path)["global_step"] if self.path.exists() else None)


PRESET_INTERVALS = {"every_n_epochs": 1, "every_n_train_steps": 5}


@pytest.mark.parametrize(
    ("every", "max_steps", "seen", "end"),
    [
        # The intervals the driver passes (checkpoint_intervals) of a preset checkpointing
        # every 5 steps, with epochs named on the command line, then without: the other
        # interval is None and never writes. Lightning's ModelCheckpoint(save_top_k=0,
        # save_last=True) gave [None] * 3, then 24 ...
        (
            checkpoint_intervals(PRESET_INTERVALS, ["checkpoint.every_n_epochs=1"]),
            -1,
            [None, 8, 16],
            24,
        ),
        # ... and [None, 5, 15], then 20: the final 2 steps unsaved
        (checkpoint_intervals(PRESET_INTERVALS), 22, [None, 5, 15], 22),
    ],
)
def test_last_checkpoint_is_written_at_every_interval_and_at_the_end(
    tmp_path, every, max_steps, seen, end
):
    path = tmp_path / "last.ckpt"
    probe = _CheckpointProbe(path)
    trainer = L.Trainer(
        max_epochs=3, max_steps=max_steps, limit_train_batches=8, limit_val_batches=2,
        callbacks=[LastCheckpoint(tmp_path, **every), probe], logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert probe.seen == seen
    assert read_checkpoint(path)["global_step"] == trainer.global_step == end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_resumed_csv_log_keeps_the_earlier_rows_once(tmp_path):
    """Lightning saves the log after every row, so a killed run's file holds rows past its
    last checkpoint (here 6 and 7 past step 5); the resumed run logs those again."""
    first_run, second_run = tmp_path / "first", tmp_path / "second"
    first = ResumableCSVLogger(first_run, name="csv", version="")
    for step in range(8):
        first.log_metrics({"train/loss": float(step)}, step=step)
        first.save()
    with open(first_run / "csv" / "metrics.csv", "a") as file:
        file.write("0.7")  # a row the kill cut short
    checkpoint = str(first_run / CHECKPOINT_DIR / "last.ckpt")

    resumed = ResumableCSVLogger(first_run, name="csv", version="", resume_from=checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "previous log files will be deleted"
        assert resumed.experiment.metrics == []
    assert [row["step"] for row in metrics_log(first_run)] == [str(s) for s in range(8)]
    resumed.log_metrics({"train/loss": 60.0, "val/psnr": 1.0}, step=6)  # resumed after step 5
    resumed.save()
    rows = metrics_log(first_run)
    assert [row["step"] for row in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    assert rows[6] == {"step": "6", "train/loss": "60.0", "val/psnr": "1.0"}
    assert rows[0] == {"step": "0", "train/loss": "0.0", "val/psnr": ""}

    # resume=true's default: a new run directory, continuing the log of the run it resumes
    elsewhere = ResumableCSVLogger(second_run, name="csv", version="", resume_from=checkpoint)
    elsewhere.log_metrics({"train/loss": 70.0}, step=7)
    elsewhere.save()
    assert metrics_log(second_run) == [*rows, {"step": "7", "train/loss": "70.0", "val/psnr": ""}]
    assert metrics_log(first_run) == rows

    again = ResumableCSVLogger(first_run, name="csv", version="", resume_from=checkpoint)
    again.log_metrics({"train/loss": 0.5}, step=0)  # resumed before every row it had
    again.save()
    assert metrics_log(first_run) == [{"step": "0", "train/loss": "0.5"}]

    fresh = ResumableCSVLogger(first_run, name="csv", version="")
    fresh.log_metrics({"train/loss": 9.0}, step=0)
    fresh.save()
    assert metrics_log(first_run) == [{"step": "0", "train/loss": "9.0"}]


def test_skip_done_continues_a_cut_run_and_starts_another_configuration_afresh(tmp_path):
    """A job whose results.json is not ``completed`` but whose ``last.ckpt`` is of the same
    configuration continues from it; here the checkpoint is the end of training, so the run
    only evaluates, and must score what the uninterrupted run scored. (A kill mid-training:
    the slow test above.)"""
    smoke = ["task=bof", "rank=1", "omega=200", "preset=smoke"]
    reference = run_in_process(tmp_path, *smoke)
    checkpoint = tmp_path / CHECKPOINT_DIR / "last.ckpt"
    (tmp_path / RESULTS_FILE).write_text(json.dumps({**reference, "status": "failed"}))

    continued = run_in_process(tmp_path, *smoke, "skip_done=true")
    assert continued["status"] == "completed"
    assert continued["resumed_from"] == str(checkpoint)
    assert continued["steps"] == reference["steps"]
    assert continued["metric"] == reference["metric"]

    other = run_in_process(tmp_path, "task=bof", "rank=2", "omega=200", "preset=smoke",
                           "skip_done=true")  # fmt: skip
    assert other["status"] == "completed" and other["rank"] == 2
    assert "resumed_from" not in other


def test_resume_without_any_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint of a run with this configuration"):
        run_in_process(tmp_path, "task=bof", "rank=1", "preset=smoke", "resume=true",
                       f"paths.runs_dir={tmp_path}/none")  # fmt: skip


def test_divergence_fails_the_run_and_names_the_causes(tmp_path):
    overrides = ["task=bof", "rank=1", "omega=200", "preset=smoke", "lowrank.gain=1e-38"]
    with pytest.raises(NonFiniteError):
        run_in_process(tmp_path, *overrides)
    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert results["status"] == "failed" and results["metric"]["value"] is None
    assert "NonFiniteError" in results["error"]
    for cause in ("omega=200", "lowrank.gain=1e-38", "learning rate"):
        assert cause in results["error"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rank=0"], "rank must be a positive integer"),
        (["rank=-3"], "rank must be a positive integer"),
        (["rank=1", "omega=0"], "omega must be a positive number"),
        (["rank=1", "omega=-5"], "omega must be a positive number"),
        (["rank=1", "omega=fast"], "omega must be a number, null or 'paper'"),
        (["rank=7", "omega=paper"], "it has ranks 1, 2, 5, 20"),
        (["rank=1", "task.targets=[fc9]"], "'fc9' matches no layer"),
        (["rank=1", "no_such_key=3"], "Could not override 'no_such_key'"),
        (["rank=1", "task.lr=abc"], "task.lr must be a finite number above 0, got 'abc'"),
        (["rank=1", "task.lr=-1e-3"], "task.lr must be a finite number above 0, got -0.001"),
        (["rank=1", "task.lr=inf"], "task.lr must be a finite number above 0, got inf"),
        (
            ["rank=1", "task.sigma=abc"],
            "sigma (task.sigma) must be a finite number above 0, got 'abc'",
        ),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, overrides, message):
    with pytest.raises((ValueError, ConfigCompositionException), match=re.escape(message)):
        dry_run(tmp_path, "task=bof", "preset=smoke", *overrides)


def test_gradient_accumulation_is_refused_with_the_value_and_the_fix():
    trainer = L.Trainer(accumulate_grad_batches=4, logger=False, enable_progress_bar=False)
    with pytest.raises(
        ValueError, match=r"^task bof needs trainer.accumulate_grad_batches=1, got 4: .*drop"
    ):
        require_one_step_per_batch(trainer, "bof")
    require_one_step_per_batch(L.Trainer(logger=False, enable_progress_bar=False), "bof")


@pytest.mark.parametrize(("override", "value"), [("omega=inf", "inf"), ("task.lr=nan", "nan")])
def test_a_non_finite_setting_is_refused_and_recorded(tmp_path, override, value):
    """JSON has no inf or NaN: the results.json of the refused run must still be written, and
    name the error, instead of a second error from writing it."""
    with pytest.raises(ValueError, match=f"got {value}"):
        dry_run(tmp_path, "task=bof", "preset=smoke", "rank=1", override)
    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert results["status"] == "failed" and f"got {value}" in results["error"]
    assert f'"{value}"' in json.dumps(results["fingerprint"])


def test_corrupt_mesh_is_named(tmp_path):
    broken = tmp_path / "broken.ply"
    data = trimesh.creation.icosphere().export(file_type="ply")
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(f"could not read mesh {broken}")):
        run_in_process(
            tmp_path / "run", "task=bof", "rank=1", "preset=smoke", f"task.shape={broken}"
        )
    results = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    assert f"could not read mesh {broken}" in results["error"]


def test_a_failing_logger_does_not_cost_the_run(tmp_path, caplog):
    broken = "+logger.broken._target_=tests.helpers.BrokenLogger"
    results = run_in_process(tmp_path, "task=bof", "rank=1", "preset=smoke", broken)
    assert results["status"] == "completed"
    assert "logger BrokenLogger failed" in caplog.text


@pytest.mark.slow
def test_wandb_without_network_goes_offline_and_completes(run_cli):
    start = time.monotonic()
    # WANDB_MODE empty: the logger must find out by itself that there is no network.
    run = run_cli("task=bof", "rank=1", "preset=smoke", "logger=wandb", env={"WANDB_MODE": ""})
    assert run.returncode == 0, run.output
    assert time.monotonic() - start < 120
    assert run.results["status"] == "completed"
    assert list((run.run_dir / "wandb").glob("offline-run-*"))


def test_a_silent_server_counts_as_no_network():
    # A server that accepts connections and never answers, as sandbox proxies do.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        start = time.monotonic()
        assert not network_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=0.5)
        assert time.monotonic() - start < 2.0
    assert not network_reachable("http://127.0.0.1:9", timeout_s=0.5)  # refused


@pytest.mark.parametrize(("credentials", "reachable"), [(True, False), (False, True)])
def test_wandb_logger_is_offline_without_server_or_key(
    monkeypatch, tmp_path, credentials, reachable
):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr("sinelr.loggers.wandb_credentials", lambda: credentials)
    monkeypatch.setattr("sinelr.loggers.network_reachable", lambda *a, **k: reachable)
    logger = wandb_logger(save_dir=str(tmp_path), project="t")
    assert logger._offline
    assert os.environ["WANDB_MODE"] == "offline"


def test_non_finite_guard_stops_on_a_nan_gradient():
    layer = torch.nn.Linear(2, 1)
    (layer(torch.ones(1, 2)) * float("nan")).sum().backward()

    class Trainer:
        global_step, current_epoch = 7, 1

    with pytest.raises(NonFiniteError, match=r"gradient of weight is not finite at step 7.*omega"):
        NonFiniteGuard("omega=1").on_before_optimizer_step(Trainer(), layer, None)
    with pytest.raises(NonFiniteError, match="loss is inf"):
        NonFiniteGuard("omega=1").on_train_batch_end(
            Trainer(), layer, torch.tensor(float("inf")), None, 0
        )


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"status": "completed"})

    def crash(handle):
        handle.write(b'{"status": "comp')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_text() == '{\n  "status": "completed"\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


class Payload:
    """Not a tensor or a plain container: unpickling it would run arbitrary code paths."""


def test_checkpoints_are_read_with_weights_only(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="unreadable"):
        read_checkpoint(path)
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "good.ckpt")
    assert read_checkpoint(tmp_path / "good.ckpt")["state_dict"]["w"].sum() == 2
