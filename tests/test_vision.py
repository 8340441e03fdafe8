"""Tasks ``vit_cifar``, ``vit_imagenet``, ``convnext_cifar`` (issue #11): the data readers on
files the tests write in the real formats (CIFAR-100 pickles, MNIST idx, ImageFolder trees),
parameter counts against the paper's, and runs end to end.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sinelr.data import IndexBatches
from tasks.vision import datasets
from tasks.vision.datasets import read_cifar100, read_imagefolder, read_mnist
from tests.helpers import assert_resumes_to_the_uninterrupted_result, dry_run


def write_cifar100(root: Path, n_train: int = 48, n_test: int = 40) -> Path:
    """``cifar-100-python/{train,test}`` as the real archive has them: latin-1 pickles of a
    dict with ``data`` (N × 3072 uint8, channel-major) and ``fine_labels``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": [int(i) % 100 for i in range(n)],
            "coarse_labels": [int(i) % 20 for i in range(n)],
        }
        with (folder / split).open("wb") as handle:
            pickle.dump(batch, handle)
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_mnist(root: Path, n: int = 50) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def write_image_folder(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


# --- readers ----------------------------------------------------------------------------------


def test_cifar100_pickles_are_read_as_images_and_fine_labels(tmp_path):
    write_cifar100(tmp_path, n_train=5, n_test=4)
    train, test = read_cifar100(tmp_path, None)
    assert (len(train), len(test)) == (5, 4)
    with (tmp_path / "cifar-100-python" / "train").open("rb") as handle:
        raw = pickle.load(handle)
    image = np.asarray(train.image(2))
    assert image.shape == (32, 32, 3)
    # channel-major rows: the first 1024 bytes are the red plane
    assert np.array_equal(image[..., 0].reshape(-1), raw["data"][2][:1024])
    assert np.array_equal(image[..., 2].reshape(-1), raw["data"][2][2048:])
    assert train.labels.tolist() == raw["fine_labels"]


def test_missing_cifar100_offline_says_where_it_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "network_reachable", lambda url: False)
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*No network"):
        read_cifar100(tmp_path, None)


def test_a_corrupt_cifar100_pickle_is_named(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"cifar-100-python/test is not a CIFAR-100 pickle"):
        read_cifar100(tmp_path, None)


def test_mnist_test_set_alone_is_split_the_same_way_every_time(tmp_path):
    write_mnist(tmp_path, n=50)
    train, test = read_mnist(tmp_path, None)
    assert (len(train), len(test)) == (40, 10)
    _, again_test = read_mnist(tmp_path, None)
    assert torch.equal(test.labels, again_test.labels)
    assert np.array_equal(test.pixels, again_test.pixels)
    # disjoint and together the whole set: every image appears exactly once
    pixels = np.concatenate([train.pixels, test.pixels]).reshape(50, -1)
    assert len({row.tobytes() for row in pixels}) == 50
    assert np.asarray(train.image(0)).shape == (28, 28)


def test_a_truncated_idx_file_is_named(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-7]))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz is truncated"):
        read_mnist(tmp_path, None)


def test_missing_mnist_lists_the_files_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[.gz\]"):
        read_mnist(tmp_path, None)


def test_an_unreadable_image_in_a_folder_is_named(tmp_path):
    write_image_folder(tmp_path)
    bad = tmp_path / "train" / "class1" / "3.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    train, _ = read_imagefolder(tmp_path, tmp_path)
    index = train.folder.samples.index((str(bad), 1))
    with pytest.raises(ValueError, match=r"cannot read image .*class1/3.jpg"):
        train.image(index)


def test_image_folders_need_train_and_val(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"val does not exist"):
        read_imagefolder(tmp_path, tmp_path)
    with pytest.raises(ValueError, match=r"needs task\.data_path"):
        read_imagefolder(tmp_path, None)


def test_a_bad_learning_rate_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"task\.lr must be a finite number above 0, got 0"):
        dry_run(tmp_path, "task=vit_cifar", "preset=smoke", "rank=1", "task.lr=0")


def test_randaugment_survives_its_strongest_posterize():
    from timm.data import auto_augment, create_transform

    from tasks.vision.data import with_safe_posterize

    recipe = {"input_size": (3, 8, 8), "is_training": True, "auto_augment": "rand-m9-mstd0.5-inc1"}
    transform = with_safe_posterize(create_transform(**recipe))
    (augment,) = [s for s in transform.transforms if isinstance(s, auto_augment.RandAugment)]
    (op,) = [op for op in augment.ops if op.name == "PosterizeIncreasing"]
    op.prob, op.magnitude_std = 1.0, 0  # always applied, at exactly the magnitude set below
    image = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    op.magnitude = 10
    assert np.asarray(op(image)).max() == 0  # 0 bits kept: black, as Pillow < 12 gave
    op.magnitude = 5
    assert np.asarray(op(image)).max() == 192  # 2 bits kept: 200 = 0b11001000 -> 0b11000000
    # timm itself is untouched: a transform built without the fix keeps timm's posterize.
    untouched = create_transform(**recipe)
    (plain,) = [s for s in untouched.transforms if isinstance(s, auto_augment.RandAugment)]
    (timms,) = [op for op in plain.ops if op.name == "PosterizeIncreasing"]
    assert timms.aug_fn is auto_augment.posterize
    assert auto_augment.NAME_TO_OP["PosterizeIncreasing"] is auto_augment.posterize


def test_drop_last_batches_never_run_short():
    batches = list(IndexBatches(10, 4, shuffle=True, drop_last=True))
    assert [len(b) for b in batches] == [4, 4]
    assert [len(b) for b in IndexBatches(10, 4, shuffle=True)] == [4, 4, 2]


# --- runs -------------------------------------------------------------------------------------


def dry_runs(tmp_path: Path, ranks: str, *overrides: str) -> dict[int | None, dict]:
    """results.json of an ``omega=paper`` dry run (in-process) for each of the comma-separated
    ``ranks``, by the rank results.json records."""
    found = [
        dry_run(tmp_path / f"rank={rank}", *overrides, f"rank={rank}", "omega=paper")
        for rank in ranks.split(",")
    ]
    return {r["rank"]: r for r in found}


def test_convnext_tiny_has_the_paper_parameter_counts(tmp_path):
    runs = dry_runs(tmp_path, "null,1,5,20", "task=convnext_cifar")
    millions = {rank: round(r["params"]["total"] / 1e6, 1) for rank, r in runs.items()}
    assert millions == {None: 27.9, 1: 13.8, 5: 13.9, 20: 14.2}
    for rank, results in runs.items():
        params = results["params"]
        # only the last stage's 3 MLPs (768 <-> 3072) are factorised
        k = rank or 0
        assert params["lowrank"] == 3 * 2 * (768 + 3072) * k
        saved = 0 if rank is None else 3 * (2 * 768 * 3072 - 2 * (768 + 3072) * k)
        assert params["full_rank_total"] - params["total"] == saved


@pytest.mark.parametrize(
    ("task", "d_model", "d_hidden", "omegas"),
    [("vit_cifar", 384, 1536, {1: 500.0, 10: 300.0}), ("vit_imagenet", 768, 3072, {5: 800.0})],
)
def test_vit_factorises_every_block_mlp(tmp_path, task, d_model, d_hidden, omegas):
    ranks = ",".join(map(str, omegas))
    runs = dry_runs(tmp_path, ranks, f"task={task}", "preset=paper")
    assert set(runs) == set(omegas)
    for rank, results in runs.items():
        assert results["params"]["lowrank"] == 12 * 2 * (d_model + d_hidden) * rank
        assert (results["method"], results["omega"]) == ("sine_lowrank", omegas[rank])


def test_the_rank_limited_mini_factorises_every_block_linear(tmp_path):
    """vit_mnist_all_linears: attention's qkv (96 -> 288) and proj (96 -> 96) as well as the
    MLP (96 <-> 384), in each of the mini's 4 blocks."""
    runs = dry_runs(tmp_path, "1", "+experiment=vit_mnist_all_linears", "preset=mini")
    per_block = (96 + 288) + (96 + 96) + 2 * (96 + 384)
    assert runs[1]["params"]["lowrank"] == 4 * per_block
    assert len(runs[1]["omega_per_layer"]) == 16


@pytest.mark.slow
@pytest.mark.parametrize("task", ["vit_cifar", "convnext_cifar"])
def test_smoke_run_on_written_cifar100(run_cli, tmp_path, task):
    write_cifar100(tmp_path / "data")
    run = run_cli(f"task={task}", "preset=smoke", "rank=4", "omega=100", data_dir=tmp_path / "data")
    assert run.returncode == 0, run.output
    results = run.results
    assert (results["status"], results["metric"]["name"]) == ("completed", "test/acc")
    assert 0 <= results["metrics"]["test/acc"] <= 1
    # One epoch of the 43 training images left when 10 % (5) are held out for validation, in
    # batches of 16, the last dropped (Mixup pairs a batch with its reverse; max_steps is 4).
    assert results["steps"] == 2


@pytest.mark.slow
def test_vit_imagenet_smoke_reads_imagenet_folders_and_scores_top5(run_cli, tmp_path):
    write_image_folder(tmp_path / "data" / "imagenet")
    run = run_cli("task=vit_imagenet", "preset=smoke", "rank=1", "omega=paper",
                  data_dir=tmp_path / "data")  # fmt: skip
    assert run.returncode == 0, run.output
    metrics = run.results["metrics"]
    assert 0 <= metrics["test/acc"] <= metrics["test/acc5"] <= 1


def test_imagefolder_counts_its_classes(tmp_path):
    root = write_image_folder(tmp_path / "folders", classes=4)
    args = ["task=vit_cifar", "task.dataset=imagefolder", f"task.data_path={root}",
            "preset=smoke", "rank=1", "omega=30"]  # fmt: skip
    four = dry_run(tmp_path / "four", *args)
    assert four["status"] == "dry_run"
    # 4 class folders give a 4-way head: 6 classes fewer than 10, each (width 32) + 1 bias
    ten = dry_run(tmp_path / "ten", *args, "task.num_classes=10")
    assert ten["params"]["total"] - four["params"]["total"] == 6 * (32 + 1)


@pytest.mark.slow
def test_vit_cifar_on_real_mnist(run_cli, shared_data):
    run = run_cli("task=vit_cifar", "task.dataset=mnist", "preset=smoke", "rank=1",
                  "omega=paper", data_dir=shared_data)  # fmt: skip
    assert run.returncode == 0, run.output
    assert run.results["status"] == "completed"
    assert run.results["task_config"]["dataset"] == "mnist"


@pytest.mark.slow
def test_a_killed_vision_run_resumes_to_the_uninterrupted_result(run_cli, tmp_path):
    data = write_cifar100(tmp_path / "data", n_train=72)
    args = ["task=vit_cifar", "preset=smoke", "rank=2", "omega=100", "trainer.max_epochs=3",
            "trainer.max_steps=-1", "checkpoint.every_n_train_steps=3"]  # fmt: skip
    # 3 epochs of the 65 training images left when 10 % (7) are held out for validation, in
    # batches of 16, the last dropped for Mixup: 4 steps an epoch
    assert_resumes_to_the_uninterrupted_result(
        run_cli, args, steps=12, kill_before_step=12, data_dir=data
    )
