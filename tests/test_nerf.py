"""Task ``nerf`` (issue #9): rays, NDC, rendering, the LLFF loader, BD-PSNR, and runs end to end.

Scenes the tests write are in LLFF's real layout (poses_bounds.npy, images_<factor>/*.png), so
the real loader reads them; the real fern in ../shared/data is used where present.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from scripts.download_data import main as download_main
from sinelr.bjontegaard import bd_psnr, bd_rate
from sinelr.optim import ExponentialDecay
from sinelr.report import FLAT_MARK, layout, render_markdown
from tasks.nerf.data import LLFFData, LLFFDataModule
from tasks.nerf.llff import BOUNDS_FACTOR, CameraFileError, average_pose, load_scene
from tasks.nerf.model import NeRF
from tasks.nerf.module import NerfModule, flat_psnr
from tasks.nerf.rays import camera_rays, ndc_rays
from tasks.nerf.render import RenderSettings, composite, render_chunked, render_rays, sample_pdf
from tests.helpers import assert_resumes_to_the_uninterrupted_result, dry_run

ROOT = Path(__file__).resolve().parents[1]
# LLFF stores a camera's axes as [down, right, back]; a NeRF camera [right, up, back] with the
# identity rotation is therefore these LLFF columns.
LLFF_IDENTITY = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def write_scene(
    root: Path, name: str = "toy", views: int = 10, height: int = 24, width: int = 32
) -> Path:
    """A forward-facing LLFF scene at 1/8 resolution: cameras on a small grid looking down -z."""
    scene = root / "nerf_llff_data" / name
    (scene / "images_8").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for v in range(views):
        pose = np.zeros((3, 5))
        pose[:, :3] = LLFF_IDENTITY
        pose[:, 3] = [0.1 * (v % 3), 0.1 * (v // 3), 0.0]
        pose[:, 4] = [height * 8, width * 8, width * 8]
        rows.append(np.concatenate([pose.reshape(-1), [2.0, 20.0]]))
        pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(scene / "images_8" / f"image{v:03d}.png")
    np.save(scene / "poses_bounds.npy", np.array(rows))
    return scene


# --- rays -------------------------------------------------------------------------------------


def test_a_known_camera_gives_known_ray_directions():
    c2w = torch.eye(4)[:3]
    c2w[:, 3] = torch.tensor([1.0, 2.0, 3.0])
    origins, directions = camera_rays(4, 6, 2.0, c2w)
    assert directions.shape == (24, 3)
    assert torch.equal(origins, torch.tensor([1.0, 2.0, 3.0]).expand(24, 3))
    # Pixel (column 0, row 0) is up-left of the centre (3, 2): ((0-3)/2, -(0-2)/2, -1).
    assert torch.allclose(directions[0], torch.tensor([-1.5, 1.0, -1.0]))
    # The centre pixel looks straight down -z; the last pixel is down-right.
    assert torch.allclose(directions[2 * 6 + 3], torch.tensor([0.0, 0.0, -1.0]))
    assert torch.allclose(directions[-1], torch.tensor([1.0, -0.5, -1.0]))
    # A camera turned 90° about y (looking down -x) turns every direction with it.
    turn = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    _, turned = camera_rays(4, 6, 2.0, turn)
    assert torch.allclose(turned[2 * 6 + 3], torch.tensor([-1.0, 0.0, 0.0]))


def test_ndc_conversion_of_a_ray_by_hand():
    # f = 1, W = H = 2, near = 1: the ray from (0.5, 0, 0) along (0.5, 0, -1) meets z = -1 at
    # (1, 0, -1): NDC origin (-2f/W·x/z, ., 1 + 2n/z) = (1, 0, -1), direction
    # (-2f/W·(dx/dz - x/z), ., -2n/z) = (-0.5, 0, 2).
    o, d = ndc_rays(2, 2, 1.0, 1.0, torch.tensor([[0.5, 0.0, 0.0]]), torch.tensor([[0.5, 0, -1]]))
    assert torch.allclose(o, torch.tensor([[1.0, 0.0, -1.0]]))
    assert torch.allclose(d, torch.tensor([[-0.5, 0.0, 2.0]]))


def test_ndc_rays_pass_through_the_projected_world_points():
    """Every point of a world ray, projected into NDC, lies on the NDC ray, with t in [0, 1)."""
    generator = torch.Generator().manual_seed(0)
    height, width, focal, near = 30, 40, 35.0, 1.0
    origins = torch.rand(16, 3, generator=generator) * 0.2
    directions = torch.randn(16, 3, generator=generator) * 0.3 + torch.tensor([0.0, 0.0, -1.0])
    o_ndc, d_ndc = ndc_rays(height, width, focal, near, origins, directions)
    for depth in (1.5, 4.0, 50.0):
        s = (-depth - origins[:, 2]) / directions[:, 2]  # world point at z = -depth
        p = origins + s[:, None] * directions
        projected = torch.stack(
            [
                -2 * focal / width * p[:, 0] / p[:, 2],
                -2 * focal / height * p[:, 1] / p[:, 2],
                1 + 2 * near / p[:, 2],
            ],
            dim=1,
        )
        t = (projected[:, 2] - o_ndc[:, 2]) / d_ndc[:, 2]
        assert ((t >= 0) & (t < 1)).all()
        assert torch.allclose(o_ndc + t[:, None] * d_ndc, projected, atol=1e-5)


# --- rendering --------------------------------------------------------------------------------


def test_rendering_weights_are_a_sub_probability():
    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(64, 32, 4, generator=generator) * 50  # densities from 0 to huge
    depths = torch.sort(torch.rand(64, 32, generator=generator), dim=1).values
    out = composite(raw, depths, torch.randn(64, 3, generator=generator))
    assert (out["weights"] >= 0).all()
    assert (out["weights"].sum(dim=1) <= 1 + 1e-5).all()
    assert torch.allclose(out["opacity"], out["weights"].sum(dim=1))


def test_an_opaque_first_sample_takes_all_the_weight_and_empty_space_none():
    depths = torch.linspace(0, 1, 8).expand(2, 8)
    raw = torch.zeros(2, 8, 4)
    raw[0, 0, 3] = 1e4  # ray 0 hits a wall at its first sample
    raw[:, :, :3] = 10.0  # white wherever there is density
    out = composite(raw, depths, torch.tensor([[0.0, 0.0, -1.0]] * 2))
    assert out["weights"][0, 0] == pytest.approx(1.0) and out["weights"][0, 1:].sum() < 1e-6
    assert out["weights"][1].sum() == 0  # no density anywhere: nothing is rendered
    assert torch.allclose(out["rgb"][0], torch.sigmoid(torch.tensor(10.0)).expand(3))
    assert out["depth"][0] == pytest.approx(0.0, abs=1e-6)


def test_importance_samples_follow_the_weights():
    bins = torch.linspace(0, 1, 11).expand(1, 11)
    weights = torch.zeros(1, 10)
    weights[0, 7] = 1.0  # all the mass in [0.7, 0.8]
    samples = sample_pdf(bins, weights, 1000, deterministic=False)
    inside = ((samples >= 0.7) & (samples <= 0.8)).float().mean()
    assert inside > 0.95  # the 1e-5 floor leaves ~1e-4 of the mass elsewhere
    fixed = sample_pdf(bins, weights, 16, deterministic=True)
    assert torch.equal(fixed, sample_pdf(bins, weights, 16, deterministic=True))
    assert (fixed.diff(dim=1) >= 0).all()


def test_chunked_rendering_equals_one_pass():
    torch.manual_seed(0)
    model = NeRF(depth=3, width=32, skips=(1,), sigma=1.0)
    rays = {
        "origins": torch.rand(50, 3),
        "directions": torch.tensor([0.0, 0.0, 2.0]).expand(50, 3),
        "viewdirs": torch.nn.functional.normalize(torch.randn(50, 3), dim=-1),
    }
    settings = RenderSettings(n_samples=8, n_importance=8)
    with torch.no_grad():
        whole = render_rays(model.coarse, model.fine, rays, settings)
    chunked = render_chunked(model.coarse, model.fine, rays, settings, chunk=7)
    assert torch.allclose(chunked["rgb"], whole["rgb"], atol=1e-6)
    assert torch.allclose(chunked["depth"], whole["depth"], atol=1e-6)


# --- the LLFF loader --------------------------------------------------------------------------


def test_loader_on_the_real_fern(shared_data):
    scene = load_scene(shared_data, "fern", factor=8, llffhold=8)
    assert scene.images.shape == (20, 378, 504, 3)
    assert scene.images.min() >= 0 and scene.images.max() <= 1
    assert scene.test.tolist() == [0, 8, 16] and len(scene.train) == 17
    assert scene.focal == pytest.approx(407.6, abs=0.5)  # LLFF's 3260.5 px at 1/8
    assert scene.bounds.min() == pytest.approx(1 / BOUNDS_FACTOR)
    # Re-centred: the average camera is the identity.
    assert np.allclose(average_pose(scene.poses.astype(np.float64)), np.eye(4)[:3], atol=1e-5)


def test_loader_on_a_written_scene_converts_the_axes(tmp_path):
    write_scene(tmp_path)
    scene = load_scene(tmp_path, "toy", factor=8, llffhold=4)
    assert scene.images.shape == (10, 24, 32, 3)
    assert scene.test.tolist() == [0, 4, 8]
    assert scene.focal == pytest.approx(32.0)
    # Every written camera has the NeRF identity rotation, which re-centring keeps.
    assert np.allclose(scene.poses[:, :, :3], np.eye(3), atol=1e-6)


def test_a_missing_scene_lists_the_scenes_there_are(tmp_path):
    write_scene(tmp_path, "toy")
    with pytest.raises(FileNotFoundError, match=r"scenes found in .*: toy") as error:
        load_scene(tmp_path, "fern")
    assert str(tmp_path / "nerf_llff_data" / "fern") in str(error.value)


def test_a_missing_resolution_lists_the_factors_there_are(tmp_path):
    scene = write_scene(tmp_path)
    (scene / "images_4").mkdir()
    with pytest.raises(FileNotFoundError, match=r"images_2 not found.*factors present: 4, 8"):
        load_scene(tmp_path, "toy", factor=2)


def test_image_and_pose_counts_must_agree(tmp_path):
    scene = write_scene(tmp_path)
    (scene / "images_8" / "image009.png").unlink()
    with pytest.raises(CameraFileError, match="9 images in images_8/ but 10 poses"):
        load_scene(tmp_path, "toy")


def test_an_unreadable_image_is_named(tmp_path):
    scene = write_scene(tmp_path)
    bad = scene / "images_8" / "image003.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(CameraFileError, match="cannot read image") as error:
        load_scene(tmp_path, "toy")
    assert str(bad) in str(error.value)


# --- BD-PSNR / BD-rate ------------------------------------------------------------------------


def test_bd_psnr_and_bd_rate_by_hand():
    # Two parallel straight lines in (log10 rate, PSNR): Akima reproduces lines exactly, so the
    # deltas are the gap between them: 2 dB, and in rate 10^(-2/5) - 1 = -60.19 %.
    rates = [1e3, 1e4, 1e5]
    plain, sine = [20.0, 25.0, 30.0], [22.0, 27.0, 32.0]
    assert bd_psnr(rates, plain, rates, sine) == pytest.approx(2.0)
    assert bd_rate(rates, plain, rates, sine) == pytest.approx((10**-0.4 - 1) * 100)
    assert bd_psnr(rates, sine, rates, plain) == pytest.approx(-2.0)


def test_bd_psnr_integrates_over_the_common_range_only():
    # log-rates [1, 2] with PSNR 10 → 20 and [1, 3] with PSNR 15 → 25: over the overlap [1, 2]
    # the gap is 5 - 5(x - 1), whose mean is 2.5 dB.
    assert bd_psnr([10, 100], [10, 20], [10, 1000], [15, 25]) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="do not overlap"):
        bd_psnr([10, 100], [10, 20], [1000, 10000], [15, 25])


def test_bd_psnr_follows_akima_between_points():
    # Not a straight line: the mean under Akima's curve differs from the trapezoid rule's.
    rates, psnr = [1e2, 1e3, 1e4, 1e5, 1e6], [10.0, 18.0, 22.0, 24.0, 25.0]
    flat = [20.0] * 5
    akima = -bd_psnr(rates, psnr, rates, flat) + 20.0  # mean of the curve over [2, 6]
    trapezoid = sum((a + b) / 2 for a, b in itertools.pairwise(psnr)) / 4
    assert akima != pytest.approx(trapezoid, abs=1e-3)
    assert min(psnr) < akima < max(psnr)


# --- the flat-colour floor (test/psnr_flat) ---------------------------------------------------


def test_flat_psnr_by_hand():
    # 2x2 pixels. Red 0,1,0,1: mean 0.5, squared error 0.25 everywhere. Green constant: 0.
    # Blue 0,0,0,1: mean 0.25, errors 1/16 three times and 9/16 once, mean 3/16.
    red = [[0.0, 1.0], [0.0, 1.0]]
    image = torch.tensor([red, [[0.3, 0.3], [0.3, 0.3]], [[0.0, 0.0], [0.0, 1.0]]])[None]
    expected = -10 * math.log10((0.25 + 0.0 + 3 / 16) / 3)
    assert float(flat_psnr(image)) == pytest.approx(expected, abs=1e-5)  # float32 arithmetic
    # No constant image does better: the mean colour is the least-squares flat image.
    for shift in (-0.1, 0.05):
        shifted = image.mean(dim=(-2, -1), keepdim=True).expand_as(image) + shift
        assert -10 * math.log10(float(((shifted - image) ** 2).mean())) < expected


def test_every_test_view_records_its_flat_colour_psnr(tmp_path):
    write_scene(tmp_path)
    data = LLFFDataModule(LLFFData(scene="toy", factor=8, llffhold=4, batch_size=64, val_rays=64,
                                   val_views=1, render_factor=2), tmp_path, seed=0)  # fmt: skip
    module = NerfModule(NeRF(depth=2, width=16, skips=(), fine=False),
                        RenderSettings(n_samples=4, n_importance=0), ExponentialDecay(1e-3, 1.0),
                        chunk=4096, lpips=False)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    (metrics,) = trainer.test(module, datamodule=data, verbose=False)

    # By hand from the PNGs: views 0, 4, 8 are held out; halved by 2x2 box means, as scored.
    by_hand = {}
    for view in (0, 4, 8):
        with Image.open(tmp_path / "nerf_llff_data/toy/images_8" / f"image{view:03d}.png") as im:
            pixels = np.asarray(im, dtype=np.float64) / 255
        half = pixels.reshape(12, 2, 16, 2, 3).mean(axis=(1, 3))
        by_hand[view] = -10 * math.log10(((half - half.mean(axis=(0, 1))) ** 2).mean())
        # float32 image arithmetic against float64 here: agreement to 1e-4 dB.
        assert metrics[f"test/psnr_flat/view_{view:03d}"] == pytest.approx(by_hand[view], abs=1e-4)
    # Averaged over views as test/psnr is: the mean of the per-view PSNRs.
    assert metrics["test/psnr_flat"] == pytest.approx(np.mean(list(by_hand.values())), abs=1e-4)
    assert "test/psnr" in metrics


def nerf_result(method, rank, psnr, flat=12.4, seed=0, omega=None):
    return {
        "task": "nerf", "method": method, "rank": rank, "omega": omega, "seed": seed,
        "preset": "mini", "status": "completed", "params": {"total": 1000 * (rank or 100)},
        "metric": {"name": "test/psnr", "value": psnr, "higher_is_better": True},
        "metrics": {"test/psnr": psnr, "test/psnr_flat": flat},
        "task_config": {"_target_": "tasks.nerf.NerfTask", "scene": "fern"},
    }  # fmt: skip


def test_the_report_flags_runs_not_clearly_above_flat_colour():
    runs = [
        nerf_result("dense", None, 17.5),  # clearly above: not flagged
        nerf_result("lowrank", 1, 12.4),  # at the floor
        nerf_result("sine_lowrank", 1, 12.0, omega=1400.0),  # below it
        nerf_result("lowrank", 5, 16.7, seed=0),  # seeds pooled: one of them near the floor
        nerf_result("lowrank", 5, 13.3, seed=1),
        nerf_result("sine_lowrank", 5, 13.5, omega=800.0),  # 1.1 dB above: not flagged
    ]
    (table,) = layout(runs)
    assert table.floors == {"fern": pytest.approx(12.4)}
    page = render_markdown([table], [], {}, "note")
    cells = {}
    for line in page.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) > 4 and parts[4] and parts[0] in {"dense", "lowrank", "sine_lowrank"}:
            cells[(parts[0], parts[1])] = parts[4 + table.columns.index("fern") * 3]
    flagged = {key for key, text in cells.items() if text.endswith(FLAT_MARK.strip())}
    assert flagged == {("lowrank", "1"), ("sine_lowrank", "1"), ("lowrank", "5")}, cells
    assert cells[("dense", "full")] == "17.50"
    assert "Flat colour" in page and "fern 12.40" in page


# --- the download script ----------------------------------------------------------------------


def test_download_unpacks_an_llff_archive(tmp_path):
    source = tmp_path / "src"
    write_scene(source, "fern")
    archive = tmp_path / "nerf_llff_data.zip"
    subprocess.run(["python", "-m", "zipfile", "-c", str(archive), "nerf_llff_data"], cwd=source)
    assert download_main(["llff", "--data-dir", str(tmp_path / "data"), "--url", str(archive)]) == 0
    assert len(load_scene(tmp_path / "data", "fern").images) == 10


def test_download_offline_says_where_to_put_the_data(tmp_path):
    url = "http://127.0.0.1:9/nerf_llff_data.zip"  # the discard port: refused at once
    with pytest.raises(SystemExit, match=r"nerf_llff_data/<scene>/ holds poses_bounds\.npy"):
        download_main(["llff", "--data-dir", str(tmp_path), "--url", url])


# --- end to end -------------------------------------------------------------------------------

# The toy scene is 24x32: rendered at half size, its test views are SSIM's 11x11 window or more.
SMOKE = ["task=nerf", "task.scene=toy", "preset=smoke", "task.llffhold=4", "task.render_factor=2"]


# (d_in, d_out) of one network's layers: 8 on xyz (the 6th after the skip), alpha, feature,
# view-direction and rgb layers.
LAYERS = [(3, 256), *[(256, 256)] * 4, (259, 256), *[(256, 256)] * 2,
          (256, 1), (256, 256), (259, 128), (128, 3)]  # fmt: skip


def expected_parameters(rank: int | None) -> int:
    """Coarse + fine, each layer k(d_in + d_out) where k < min(d_in, d_out), else dense."""
    total = 0
    for d_in, d_out in LAYERS:
        factorised = rank is not None and rank < min(d_in, d_out)
        total += (rank * (d_in + d_out) if factorised else d_in * d_out) + d_out
    return 2 * total


@pytest.mark.parametrize(
    ("rank", "paper_rate"), [(1, 1.3), (5, 4.7), (10, 8.7), (30, 24.6), (60, 48.6)]
)
def test_dry_run_gives_the_paper_compression_rates(tmp_path, rank, paper_rate):
    results = dry_run(tmp_path, "task=nerf", f"rank={rank}", "omega=paper")
    assert results["status"] == "dry_run"
    assert results["params"]["total"] == expected_parameters(rank)
    assert results["params"]["full_rank_total"] == expected_parameters(None) == 2 * 562_052
    assert 100 * results["compression_rate"] == pytest.approx(paper_rate, abs=0.15)


@pytest.mark.slow
def test_smoke_run_on_a_written_scene(run_cli, tmp_path):
    write_scene(tmp_path / "data")
    run = run_cli(*SMOKE, "rank=5", "omega=800", data_dir=tmp_path / "data")
    assert run.returncode == 0, run.output
    results = run.results
    assert (results["status"], results["method"], results["metric"]["name"]) == (
        "completed", "sine_lowrank", "test/psnr",
    )  # fmt: skip
    metrics = results["metrics"]
    views = [metrics[f"test/psnr/view_{v:03d}"] for v in (0, 4, 8)]
    assert metrics["test/psnr"] == pytest.approx(sum(views) / 3, rel=1e-5)
    assert 0 < metrics["test/ssim"] <= 1
    for view in (0, 4, 8):
        for kind in ("rgb", "depth"):
            with Image.open(run.run_dir / f"render_{view:03d}_{kind}.png") as image:
                assert image.size == (16, 12)


@pytest.mark.slow
def test_smoke_run_on_the_real_fern_writes_renders(run_cli, shared_data):
    run = run_cli("task=nerf", "task.scene=fern", "rank=5", "omega=800", "preset=smoke",
                  data_dir=shared_data)  # fmt: skip
    assert run.returncode == 0, run.output
    assert run.results["status"] == "completed"
    assert math.isfinite(run.results["metric"]["value"])
    assert len(list(run.run_dir.glob("render_*_rgb.png"))) == 3


@pytest.mark.slow
def test_without_data_the_run_names_the_path_it_looked_at(run_cli, tmp_path):
    run = run_cli("task=nerf", "rank=5", "omega=800", "preset=smoke", data_dir=tmp_path / "nowhere")
    assert run.returncode != 0
    assert str(tmp_path / "nowhere" / "nerf_llff_data" / "fern") in run.output
    assert run.results["status"] == "failed"


@pytest.mark.slow
def test_a_killed_nerf_run_resumes_to_the_uninterrupted_result(run_cli, tmp_path):
    data = tmp_path / "data"
    write_scene(data)
    # killed at step 15, after the CSV log's rows of steps 0-15 (a validation at step 9 among
    # them): the resumed run's log must still have every one
    args = [*SMOKE, "rank=1", "omega=1400", "trainer.max_steps=60",
            "checkpoint.every_n_train_steps=15"]  # fmt: skip
    assert_resumes_to_the_uninterrupted_result(
        run_cli, args, steps=60, kill_before_step=60, data_dir=data
    )


@pytest.mark.slow
def test_a_render_factor_too_large_for_ssim_is_a_clear_error(run_cli, tmp_path):
    write_scene(tmp_path / "data")
    run = run_cli(*SMOKE, "task.render_factor=4", data_dir=tmp_path / "data")
    assert run.returncode != 0
    assert "task.render_factor=4 renders the test views at 6x8" in run.output


@pytest.mark.slow
def test_a_diverging_nerf_run_stops_and_says_why(run_cli, tmp_path):
    write_scene(tmp_path / "data")
    run = run_cli(*SMOKE, "rank=1", "omega=1400", "task.lr=1e30", data_dir=tmp_path / "data")
    assert run.returncode != 0
    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["status"] == "failed"
    assert "omega=1400.0" in results["error"]
