"""Presets: every task × preset pair is a file or a clear error, and preset=paper on a CPU warns.

run.py's side (the process fails within seconds, the printed line) is in test_cli.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import sinelr.driver
from sinelr.presets import (
    check_task_preset,
    fast_precision,
    native_bf16,
    paper_on_cpu_warning,
)
from tests.helpers import compose_config, dry_run

ROOT = Path(__file__).resolve().parents[1]
TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "preset").glob("*.yaml"))
TASK_PRESETS = {p.stem for p in (ROOT / "conf" / "task_preset").glob("*.yaml")}
#: Pairs with no file, on purpose: LLaMA-3-8B has no CPU-sized stand-in, and no weights or data
#: are at hand offline (preset=smoke runs a tiny model given as task.model=<dir>).
NO_FILE = {("commonsense", "mini")}
#: midi, a budget between mini and paper, exists where the mini is an early-training snapshot
#: that a longer CPU run can leave: NeRF (issue #18).
NO_FILE |= {(task, "midi") for task in TASKS if task != "nerf"}


def choices(task: str, preset: str) -> dict[str, str]:
    """The config groups Hydra chose for ``run.py task=<task> preset=<preset>``."""
    cfg = compose_config(f"task={task}", f"preset={preset}", hydra=True)
    return dict(cfg.hydra.runtime.choices)


def test_every_task_and_preset_is_a_file_or_a_known_gap():
    missing = {(t, p) for t in TASKS for p in PRESETS if f"{t}_{p}" not in TASK_PRESETS}
    assert missing == NO_FILE


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("preset", PRESETS)
def test_each_pair_passes_or_names_the_presets_there_are(task: str, preset: str):
    pair = choices(task, preset)
    if (task, preset) not in NO_FILE:
        check_task_preset(pair, TASK_PRESETS)
        return
    presets = sorted(p for p in PRESETS if (task, p) not in NO_FILE)
    match = f"task={task} has no preset={preset} .*; its presets are: {', '.join(presets)}$"
    with pytest.raises(ValueError, match=match):
        check_task_preset(pair, TASK_PRESETS)


def test_a_task_without_presets_says_so():
    with pytest.raises(ValueError, match=r"task=mine has no preset=mini .*; it has none$"):
        check_task_preset({"task": "mine", "preset": "mini", "task_preset": "mine_mini"}, [])


def test_dropping_the_task_preset_is_allowed():
    """``~task_preset`` runs the task's own defaults: no choice, nothing to check."""
    check_task_preset({"task": "commonsense", "preset": "mini"}, TASK_PRESETS)


# --- preset=paper on the CPU ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "device", "trains", "warns"),
    [
        ("paper", "cpu", True, True),
        ("paper", "cuda", True, False),
        ("paper", "cpu", False, False),  # theory: no training, minutes on a CPU
        ("mini", "cpu", True, False),
    ],
)
def test_only_a_paper_run_training_on_the_cpu_warns(preset, device, trains, warns):
    assert (paper_on_cpu_warning(preset, device, trains) is not None) == warns


def test_a_paper_run_on_the_cpu_warns_before_it_loads_any_data(tmp_path, caplog):
    """The warning is the run's first record; the run goes on (here to the missing mesh)."""
    cfg = compose_config("task=bof", "preset=paper", "rank=1", f"paths.data_dir={tmp_path}")
    with (
        caplog.at_level(logging.INFO, logger="sinelr"),
        pytest.raises(FileNotFoundError, match="bunny"),
    ):
        sinelr.driver.run(cfg, tmp_path / "run")
    records = [r for r in caplog.records if r.name.startswith("sinelr.")]
    assert records[0].levelno == logging.WARNING and "days on a CPU" in records[0].message


def test_a_paper_dry_run_does_not_warn(tmp_path, caplog):
    """A dry run trains nothing: counting the paper's model on a CPU is what it is for."""
    with caplog.at_level(logging.WARNING, logger="sinelr"):
        assert dry_run(tmp_path, "task=bof", "preset=paper", "rank=1")["status"] == "dry_run"
    assert "days on a CPU" not in caplog.text


# --- the presets' precision: bf16 autocast only where bf16 is native --------------------------

AMX = {"architecture": "x86_64", "avx2": True, "amx_bf16": True, "amx_tile": True}
AVX2_ONLY = {"architecture": "x86_64", "avx2": True, "amx_bf16": False, "avx512_bf16": False}
ARM_BF16 = {"architecture": "arm64", "neon": True, "bf16": True}


@pytest.mark.parametrize(
    ("capabilities", "native"), [(AMX, True), (AVX2_ONLY, False), (ARM_BF16, True), ({}, False)]
)
def test_native_bf16_reads_the_cpu_features(capabilities, native):
    assert native_bf16(capabilities) is native


@pytest.mark.parametrize(
    ("accelerator", "capabilities", "precision"),
    [
        ("cpu", AMX, "bf16-mixed"),
        ("cpu", AVX2_ONLY, "32-true"),  # emulated bf16: 4-40x slower (RESULTS §3.1)
        ("gpu", AVX2_ONLY, "bf16-mixed"),  # the host CPU does not matter on a GPU
    ],
)
def test_fast_precision_is_fp32_only_on_a_cpu_without_native_bf16(
    monkeypatch, accelerator, capabilities, precision
):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert fast_precision(accelerator) == precision


@pytest.mark.parametrize("task", ["bof", "nerf", "glue"])
@pytest.mark.parametrize(
    ("capabilities", "precision"), [(AMX, "bf16-mixed"), (AVX2_ONLY, "32-true")]
)
def test_the_cpu_minis_train_in_the_machines_fast_precision(
    monkeypatch, task, capabilities, precision
):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert compose_config(f"task={task}", "preset=mini").trainer.precision == precision


def test_the_command_line_still_chooses_the_precision(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: AVX2_ONLY)
    cfg = compose_config("task=bof", "preset=mini", "trainer.precision=bf16-mixed")
    assert cfg.trainer.precision == "bf16-mixed"
