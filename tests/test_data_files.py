"""Task data files read strictly: LLFF's poses_bounds.npy and GLUE's TSVs (issue #4, bad input),
and the Thai statue fetched by scripts/download_data.py thai.

Each reader is checked on the real files in ../shared/data when present, and on small files
made here (valid, truncated, corrupt) so that the errors are tested everywhere.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import trimesh

from scripts.download_data import main as download_main
from tasks.bof.shapes import find_mesh
from tasks.glue.tsv import FORMATS, TsvError, read_glue_tsv
from tasks.nerf.llff import CameraFileError, load_poses_bounds

# Official dev-split sizes (../shared/data/README.md).
GLUE_DEV_ROWS = {"CoLA": 1043, "SST-2": 872, "MRPC": 408, "STS-B": 1500, "RTE": 277}


def _poses_bounds(views: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(views, 3, 5))
    poses[:, :, 4] = [378.0, 504.0, 407.6]  # height, width, focal
    near = rng.uniform(10, 20, size=(views, 1))
    return np.concatenate([poses.reshape(views, 15), near, near + 60], axis=1)


@pytest.fixture
def camera_file(tmp_path: Path) -> Path:
    path = tmp_path / "poses_bounds.npy"
    np.save(path, _poses_bounds())
    return path


def test_real_fern_cameras_load(shared_data):
    poses, bounds = load_poses_bounds(shared_data / "nerf_llff_data" / "fern" / "poses_bounds.npy")
    assert poses.shape == (20, 3, 5) and bounds.shape == (20, 2)
    assert (bounds[:, 0] > 0).all() and (bounds[:, 1] > bounds[:, 0]).all()
    assert np.allclose(poses[:, :2, 4], [3024, 4032])  # full-resolution height, width


def test_a_valid_camera_file_round_trips(camera_file):
    poses, bounds = load_poses_bounds(camera_file)
    np.testing.assert_array_equal(
        np.concatenate([poses.reshape(-1, 15), bounds], 1), _poses_bounds()
    )


def test_a_truncated_camera_file_is_named(camera_file):
    data = camera_file.read_bytes()
    camera_file.write_bytes(data[: len(data) - 100])
    with pytest.raises(CameraFileError, match="truncated") as error:
        load_poses_bounds(camera_file)
    assert str(camera_file) in str(error.value)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (_poses_bounds()[:, :15], r"shape \(4, 15\).*\(views, 17\)"),
        (np.zeros((0, 17)), "0 views"),
        (_poses_bounds().astype(np.int64), "expected floats"),
        (np.where(np.arange(17) == 3, np.nan, _poses_bounds()), r"non-finite numbers in views"),
        (_poses_bounds() * np.r_[np.ones(15), -1, 1], r"0 < near < far"),
        (_poses_bounds() * np.r_[np.ones(14), 0, 1, 1], "non-positive height, width or focal"),
    ],
)
def test_a_corrupt_camera_file_says_what_is_wrong(tmp_path, array, message):
    path = tmp_path / "poses_bounds.npy"
    np.save(path, array)
    with pytest.raises(CameraFileError, match=message):
        load_poses_bounds(path)


def test_a_pickled_camera_file_is_refused(tmp_path):
    path = tmp_path / "poses_bounds.npy"
    np.save(path, np.array([{"not": "numbers"}], dtype=object), allow_pickle=True)
    with pytest.raises(CameraFileError, match=r"not a NumPy \.npy file"):
        load_poses_bounds(path)


def test_a_missing_camera_file_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nerf_llff_data") as error:
        load_poses_bounds(tmp_path / "fern" / "poses_bounds.npy")
    assert str(tmp_path / "fern" / "poses_bounds.npy") in str(error.value)


@pytest.mark.parametrize("task", sorted(GLUE_DEV_ROWS))
def test_real_glue_dev_splits_read_whole(shared_data, task):
    examples = read_glue_tsv(shared_data / "glue" / task / "dev.tsv", task)
    assert len(examples.texts) == len(examples.labels) == GLUE_DEV_ROWS[task]
    assert all(len(t) == len(FORMATS[task].text) and all(t) for t in examples.texts)
    if task == "STS-B":
        assert 0 <= min(examples.labels) < max(examples.labels) <= 5
    else:
        assert set(examples.labels) == {0, 1}


RTE = 'index\tsentence1\tsentence2\tlabel\n0\tA "quoted" cat sat.\tA cat sat.\tentailment\n'


def test_quotes_are_text_and_labels_are_class_indices(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text(RTE + "1\tIt rained.\tIt was dry.\tnot_entailment\n")
    examples = read_glue_tsv(path, "RTE")
    assert examples.texts == [('A "quoted" cat sat.', "A cat sat."), ("It rained.", "It was dry.")]
    assert examples.labels == [0, 1]


@pytest.mark.parametrize(
    ("task", "text", "message"),
    [
        ("RTE", RTE + "1\tIt rained.\tIt wa", r"line 3: 3 tab-separated fields where RTE has 4"),
        ("RTE", RTE + "1\tIt rained.\tIt was dry.\tmaybe\n", r"line 3: label 'maybe' is not one"),
        ("RTE", RTE.split("\n", 1)[1], "header line beginning 'index'"),
        ("STS-B", "index" + "\tx" * 9 + "\n" + "0\t" * 9 + "7.5\n", r"score '7.5' is not a number"),
        ("SST-2", "", "is empty"),
        ("SST-2", "sentence\tlabel\n", "has no examples"),
    ],
)
def test_a_bad_glue_file_names_the_file_and_line(tmp_path, task, text, message):
    path = tmp_path / "dev.tsv"
    path.write_text(text)
    with pytest.raises(TsvError, match=message) as error:
        read_glue_tsv(path, task)
    assert str(path) in str(error.value)


def test_a_glue_file_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes(b"sentence\tlabel\n\xff\xfe\x00garbage\t1\n")
    with pytest.raises(TsvError, match="not UTF-8"):
        read_glue_tsv(path, "SST-2")


def test_a_missing_glue_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"glue/<Task>/\{train,dev\}.tsv"):
        read_glue_tsv(tmp_path / "RTE" / "dev.tsv", "RTE")
    with pytest.raises(ValueError, match="known: CoLA, SST-2"):
        read_glue_tsv(tmp_path / "dev.tsv", "QNLI")


# -- the Thai statue: scripts/download_data.py thai --------------------------------------------


def _gzip(path: Path, data: bytes) -> str:
    path.write_bytes(gzip.compress(data))
    return path.as_uri()


def test_thai_is_decompressed_to_a_mesh_the_bof_task_finds(tmp_path):
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    url = _gzip(tmp_path / "statuette.ply.gz", box.export(file_type="ply"))
    data = tmp_path / "data"
    assert download_main(["thai", "--data-dir", str(data), "--url", url]) == 0
    path = find_mesh("thai", data, tmp_path / "cache")
    assert path == data / "meshes" / "thai.ply"
    mesh = trimesh.load(path)
    np.testing.assert_allclose(mesh.extents, [1.0, 2.0, 3.0])
    assert list((data / "meshes").iterdir()) == [path]  # no temporary file left behind


def test_thai_offline_says_where_to_put_the_mesh(tmp_path):
    url = "http://127.0.0.1:9/xyzrgb_statuette.ply.gz"  # the discard port: refused at once
    with pytest.raises(SystemExit, match=r"Offline: download xyzrgb_statuette\.ply\.gz") as error:
        download_main(["thai", "--data-dir", str(tmp_path), "--url", url])
    assert str(tmp_path / "meshes" / "thai.ply") in str(error.value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (gzip.compress(b"ply\nformat ascii 1.0\n" * 100, mtime=0)[:40], "not a complete gzip file"),
        (gzip.compress(b"<html>Not Found</html>", mtime=0), "does not hold a PLY mesh"),
    ],
    ids=["truncated", "not-a-mesh"],  # stable ids: pytest-xdist's workers must collect alike
)
def test_a_bad_thai_download_leaves_the_mesh_there_untouched(tmp_path, payload, message):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    (meshes / "thai.ply").write_bytes(b"ply\nthe mesh from before")
    (tmp_path / "bad.ply.gz").write_bytes(payload)
    with pytest.raises(SystemExit, match=message):
        download_main(["thai", "--data-dir", str(tmp_path), "--url", str(tmp_path / "bad.ply.gz")])
    assert (meshes / "thai.ply").read_bytes() == b"ply\nthe mesh from before"
    assert [p.name for p in meshes.iterdir()] == ["thai.ply"]
