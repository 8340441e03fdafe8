"""Issue #36: every result says where it came from, and no choice reads the test metric.

Provenance: results.json's ``provenance`` (commit, times, machine, versions, precision,
command), outside the fingerprint, kept by ``skip_done``. Selection: results.json's
``selection`` is the validation metric of every task that has data its test never sees, and
that is what a search maximises (``run.search_value``) and what picks GLUE's best epoch; each
task's validation and test data are disjoint (bof excepted: it fits one shape).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import run
from sinelr import provenance
from sinelr.plan import build_task
from sinelr.results import RESULTS_FILE, Metric, RunResult, Selection
from tasks.nerf.data import LLFFData, LLFFDataModule
from tasks.vision.data import VisionData, VisionDataModule
from tests.helpers import compose_config, run_in_process
from tests.test_nerf import write_scene
from tests.test_sweeps import multirun, sweep_results
from tests.test_vision import write_cifar100, write_mnist

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ("task=bof", "rank=1", "omega=200", "preset=smoke")


def _in_checkout() -> bool:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True)
    return done.returncode == 0


def test_a_run_records_its_provenance_outside_its_fingerprint(tmp_path):
    result = run_in_process(tmp_path, *SMOKE)
    record = result["provenance"]
    if _in_checkout():
        assert re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"])
        assert isinstance(record["git"]["dirty"], bool)
    started, finished = (
        datetime.strptime(record[key], "%Y-%m-%dT%H:%M:%SZ")
        for key in ("started_at", "finished_at")
    )
    assert started <= finished
    assert record["machine"]["cpu"] and record["machine"]["cores"] >= 1
    assert set(record["machine"]["cpu_flags"]) <= set(provenance.NUMERIC_CPU_FLAGS)
    assert record["versions"]["torch"] == torch.__version__
    assert record["precision"] == str(compose_config(*SMOKE).trainer.precision)
    assert "provenance" not in json.dumps(result["fingerprint"])


def test_git_state_outside_a_checkout_is_null(tmp_path):
    assert provenance.git_state(tmp_path / "provenance.py") == {"commit": None, "dirty": None}


@pytest.mark.skipif(not _in_checkout(), reason="needs a git checkout of sinelr")
def test_code_installed_inside_a_checkout_but_not_tracked_there_has_no_commit(tmp_path):
    """A wheel installed into a virtual environment inside some checkout (this one, or a user's
    project) is not the code of that checkout's HEAD."""
    installed = ROOT / "outputs" / f"site-packages-{tmp_path.name}" / "sinelr"
    installed.mkdir(parents=True)
    try:
        copy = installed / "provenance.py"
        copy.write_text(Path(provenance.__file__).read_text())
        assert provenance.git_state(copy) == {"commit": None, "dirty": None}
        tracked = provenance.git_state(Path(provenance.__file__))
        assert re.fullmatch(r"[0-9a-f]{40}", tracked["commit"])
    finally:
        shutil.rmtree(installed.parent)


def test_skip_done_keeps_the_first_runs_provenance_and_a_continued_run_gets_its_own(tmp_path):
    first = run_in_process(tmp_path, *SMOKE)
    again = run_in_process(tmp_path, *SMOKE, "skip_done=true")
    assert again == first  # not run again: the file, provenance included, is untouched

    (tmp_path / RESULTS_FILE).write_text(json.dumps({**first, "status": "failed"}))
    continued = run_in_process(tmp_path, *SMOKE, "skip_done=true")
    assert continued["resumed_from"] and continued["metric"] == first["metric"]
    assert continued["provenance"]["started_at"] >= first["provenance"]["finished_at"]
    # The part before the cut keeps its own record: a run resumed at another commit or on
    # another machine says so.
    assert continued["provenance"]["resumed"] == [first["provenance"]]


def test_bof_selects_on_its_test_metric_and_says_so(tmp_path):
    result = run_in_process(tmp_path, *SMOKE)
    assert result["selection"] == {**result["metric"], "independent": False}


def test_a_search_maximises_the_validation_metric_not_the_test_metric():
    result = RunResult(
        task="vit_cifar", method="lowrank", rank=1, omega=None, adapter=None, seed=0,
        preset="mini", metric=Metric("test/acc", 0.9, True), status="completed",
        selection=Selection("val/acc", 0.4, True, True),
    )  # fmt: skip
    assert run.search_value(result) == 0.4
    assert RunResult.from_json(result.to_json()).selection == (result.selection)


@pytest.mark.parametrize("dataset", ["vit_cifar", "convnext_cifar", "vit_imagenet"])
def test_vision_validates_apart_except_in_the_papers_protocol(dataset):
    assert compose_config(f"task={dataset}").task.val_fraction > 0
    assert compose_config(f"task={dataset}", "preset=paper").task.val_fraction == 0


def test_nerf_validates_apart_except_in_the_papers_protocol():
    assert compose_config("task=nerf", "preset=mini").task.val_views > 0
    assert compose_config("task=nerf", "preset=paper").task.val_views == 0


def test_vision_validation_is_held_out_of_training_and_never_the_test_split(tmp_path):
    write_mnist(tmp_path)
    settings = VisionData(
        dataset="mnist", data_path=None, val_fraction=0.25, img_size=28, in_chans=1,
        augment={}, crop_pct=1.0, batch_size=4, eval_batch_size=4, num_workers=0,
    )  # fmt: skip
    data = VisionDataModule(settings, tmp_path, seed=3)
    data.setup("fit")
    train, val, test = (data.splits[name].source for name in ("train", "val", "test"))
    assert val.source is train.source
    assert len(test) == 10 and len(train.source) == 40  # write_mnist's 50 images, split 80/20
    held, kept = set(val.indices.tolist()), set(train.indices.tolist())
    assert not held & kept and len(held | kept) == len(train.source)
    assert len(held) == round(0.25 * len(train.source))
    other_seed = VisionDataModule(settings, tmp_path, seed=4)
    other_seed.setup("fit")
    assert torch.equal(other_seed.splits["val"].source.indices, val.indices)  # data, not run


def test_nerf_validation_views_are_neither_trained_on_nor_tested(tmp_path):
    write_scene(tmp_path)
    data = LLFFDataModule(LLFFData(scene="toy", factor=8, llffhold=4, batch_size=64, val_rays=64,
                                   val_views=2, render_factor=2), tmp_path, seed=0)  # fmt: skip
    data.setup("fit")
    views = {name: set(data.views[name].tolist()) for name in ("train", "val", "test")}
    assert len(views["val"]) == 2
    assert not views["val"] & views["train"] and not views["val"] & views["test"]
    assert not views["train"] & views["test"]
    pixels = data.scene.height * data.scene.width
    assert len(data.train_rays) == len(views["train"]) * pixels
    # The validation rays are rays of the held-out views: their colours are those views' pixels.
    val_pixels = np.concatenate([data.scene.images[v].reshape(-1, 3) for v in data.views["val"]])
    colours = {tuple(row) for row in np.round(val_pixels, 6).tolist()}
    rays = np.round(data.val_table.columns["rgb"].numpy(), 6).tolist()
    assert all(tuple(row) in colours for row in rays)


def test_glue_picks_its_best_epoch_on_validation_held_out_of_the_scored_examples():
    task = build_task(compose_config("task=glue", "task.name=sst2", "task.protocol=sora"))
    (keep_best,) = task.callbacks(None)
    assert keep_best.monitor == task.selection_metric == "val/acc"
    assert task.validates_apart
    assert not build_task(compose_config("task=glue", "task.protocol=dev")).validates_apart


def test_bof_cannot_validate_apart():
    assert not build_task(compose_config(*SMOKE)).validates_apart


@pytest.mark.slow
def test_omega_optuna_maximises_the_validation_metric(tmp_path):
    """Optuna maximises what run.py returns: each trial's results.json ``selection`` (val/acc on
    images held out of training), not its test accuracy."""
    write_cifar100(tmp_path / "no-data")
    sweep = tmp_path / "sweep"
    proc = multirun(
        "task=vit_cifar", "preset=smoke", "hparams_search=omega_optuna", "task.val_fraction=0.25",
        "hydra.sweeper.n_trials=3", sweep_dir=sweep,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = list(sweep_results(sweep).values())
    assert len(trials) == 3
    for trial in trials:
        assert trial["selection"]["name"] == "val/acc" and trial["selection"]["independent"]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == max(t["selection"]["value"] for t in trials)
    # Only telling if validation and test disagree somewhere (12 and 40 images: they do).
    assert any(t["selection"]["value"] != t["metric"]["value"] for t in trials)


def test_a_search_in_the_wrong_direction_for_its_selection_is_refused():
    loss = RunResult(
        task="commonsense", method="lora", rank=8, omega=None, adapter="lora", seed=0,
        preset="smoke", metric=Metric("test/acc", 0.5, True), status="completed",
        selection=Selection("val/loss", 1.2, False, True),
    )  # fmt: skip
    assert run.search_value(loss, "minimize") == 1.2
    with pytest.raises(ValueError, match=r"add hydra\.sweeper\.direction=minimize"):
        run.search_value(loss, "maximize")
    old = RunResult.from_json({**loss.to_json(), "selection": None})  # before selections
    assert old.selection is None and run.search_value(old, "maximize") is None


def test_validating_apart_with_validation_turned_off_is_refused_before_training(tmp_path):
    write_mnist(tmp_path / "no-data")
    with pytest.raises(ValueError, match=r"trainer\.limit_val_batches=0 turns validation off"):
        run_in_process(
            tmp_path, "task=vit_cifar", "task.dataset=mnist", "preset=smoke", "rank=1",
            f"paths.data_dir={tmp_path / 'no-data'}", "trainer.limit_val_batches=0",
        )  # fmt: skip
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["steps"] == 0
