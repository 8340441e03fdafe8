"""Runs that survive: resume after a kill, non-finite guard, bad input, safe files, determinism."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import trimesh

from sinelr.callbacks import NonFiniteError, NonFiniteGuard
from sinelr.checkpoint import CheckpointError, read_checkpoint
from sinelr.io import atomic_write, atomic_write_json
from sinelr.loggers import network_reachable, wandb_logger
from tests.helpers import kill_at_first_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Long enough (512 steps, a few seconds) to be killed mid-epoch; checkpoints every 20 steps.
RESUMABLE = [
    "task=bof", "rank=2", "omega=100", "preset=smoke", "task.resolution=32",
    "task.batch_size=256", "trainer.max_epochs=4", "checkpoint.every_n_train_steps=20",
    "checkpoint.every_n_epochs=null",
]  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SINELR_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(run_cli, tmp_path):
    reference = run_cli(*RESUMABLE)
    assert reference.returncode == 0, reference.output

    run_dir = tmp_path / "killed"
    checkpoint = kill_at_first_checkpoint(RESUMABLE, run_dir, _env(tmp_path))
    killed_at = read_checkpoint(checkpoint)["global_step"]
    assert 0 < killed_at < 128  # mid-epoch: an epoch has 32³/256 = 128 steps

    resumed = run_cli(*RESUMABLE, "resume=true", run_dir=run_dir)
    assert resumed.returncode == 0, resumed.output
    assert resumed.results["resumed_from"] == str(checkpoint)
    assert resumed.results["steps"] == reference.results["steps"] == 512
    assert resumed.results["metric"]["value"] == reference.results["metric"]["value"]
    assert resumed.results["metrics"]["train/loss"] == reference.results["metrics"]["train/loss"]


@pytest.mark.slow
def test_same_seed_same_metric_other_seed_other_run(run_cli):
    first, second = run_cli(*RESUMABLE), run_cli(*RESUMABLE)
    other = run_cli(*RESUMABLE, "seed=1")
    for run in (first, second, other):
        assert run.returncode == 0, run.output
    assert first.results["metric"]["value"] == second.results["metric"]["value"]
    assert first.results["metrics"] == second.results["metrics"]
    assert first.results["metrics"]["train/loss"] != other.results["metrics"]["train/loss"]


@pytest.mark.slow
def test_checkpoint_of_another_configuration_is_refused(run_cli):
    original = run_cli("task=bof", "rank=1", "omega=200", "preset=smoke")
    assert original.returncode == 0, original.output
    checkpoint = original.run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.exists()
    other = run_cli("task=bof", "rank=2", "omega=200", "preset=smoke", f"ckpt_path={checkpoint}")
    assert other.returncode != 0
    assert "different configuration" in other.output
    assert "rank: 1 (checkpoint) vs 2 (now)" in other.output
    assert other.results["status"] == "failed"


@pytest.mark.slow
def test_resume_without_any_checkpoint_says_so(run_cli, tmp_path):
    run = run_cli(
        "task=bof", "rank=1", "preset=smoke", "resume=true", f"paths.runs_dir={tmp_path}/none"
    )
    assert run.returncode != 0
    assert "no checkpoint of a run with this configuration" in run.output


@pytest.mark.slow
def test_divergence_fails_the_run_and_names_the_causes(run_cli):
    run = run_cli("task=bof", "rank=1", "omega=200", "preset=smoke", "lowrank.gain=1e-38")
    assert run.returncode != 0
    results = run.results
    assert results["status"] == "failed" and results["metric"]["value"] is None
    assert "NonFiniteError" in results["error"]
    for cause in ("omega=200", "lowrank.gain=1e-38", "learning rate"):
        assert cause in results["error"]


@pytest.mark.slow
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
    ],
)
def test_bad_input_is_a_clear_error(run_cli, overrides, message):
    run = run_cli("task=bof", "preset=smoke", "dry_run=true", *overrides)
    assert run.returncode != 0
    assert message in run.output


@pytest.mark.slow
def test_corrupt_mesh_is_named(run_cli, tmp_path):
    broken = tmp_path / "broken.ply"
    data = trimesh.creation.icosphere().export(file_type="ply")
    broken.write_bytes(data[: len(data) // 2])
    run = run_cli("task=bof", "rank=1", "preset=smoke", f"task.shape={broken}")
    assert run.returncode != 0
    assert f"could not read mesh {broken}" in run.results["error"]


@pytest.mark.slow
def test_a_failing_logger_does_not_cost_the_run(run_cli):
    run = run_cli(
        "task=bof", "rank=1", "preset=smoke", "+logger.broken._target_=tests.helpers.BrokenLogger"
    )
    assert run.returncode == 0, run.output
    assert run.results["status"] == "completed"
    assert "logger BrokenLogger failed" in run.output


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
