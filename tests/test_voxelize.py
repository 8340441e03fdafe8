"""Mesh → solid occupancy: filled insides, robustness to holes, the cache, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from tasks.bof.shapes import find_mesh, trefoil_mesh
from tasks.bof.voxelize import MeshError, cache_path, load_mesh, load_occupancy, voxelize


def centres(resolution: int) -> np.ndarray:
    c = -1 + (2 * np.arange(resolution) + 1) / resolution
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)


def test_sphere_is_filled_exactly():
    resolution = 32
    grid = voxelize(trimesh.creation.icosphere(subdivisions=5, radius=3.0), resolution)
    half = 1 - 4 / resolution  # the longest side spans [-half, half]
    inside = np.linalg.norm(centres(resolution), axis=-1) < half
    # The icosphere is inscribed in the true sphere: it may only lose voxels at the surface.
    assert not (grid & ~inside).any()
    assert (grid & inside).sum() / inside.sum() > 0.97
    assert grid[16, 16, 16]  # the centre is filled, not only the surface


def test_lattice_aligned_box_has_exact_volume():
    resolution = 24
    # The box's faces fall exactly between voxel centres: no ray can graze an edge.
    grid = voxelize(trimesh.creation.box(extents=[2.0, 1.0, 1.0]), resolution)
    half = 1 - 4 / resolution
    expected = (np.abs(centres(resolution)) < [half, half / 2, half / 2]).all(-1)
    assert np.array_equal(grid, expected)


def test_a_hole_only_changes_voxels_at_the_hole():
    resolution = 32
    mesh = trimesh.creation.icosphere(subdivisions=4)
    # Cut a patch off the diagonal, away from the poles that set the bounding box.
    axis = np.ones(3) / np.sqrt(3)
    cos_edge = 0.95
    patch = mesh.triangles_center @ axis > cos_edge
    holed = trimesh.Trimesh(mesh.vertices, mesh.faces[~patch])
    assert not holed.is_watertight and np.allclose(holed.bounds, mesh.bounds)
    full, open_ = voxelize(mesh, resolution), voxelize(holed, resolution)
    assert not (full & ~open_).any()  # the solid keeps every voxel: no leak empties it
    changed = centres(resolution)[full != open_]
    hole_centre = (1 - 4 / resolution) * axis
    hole_radius = np.sqrt(1 - cos_edge**2)
    assert (np.linalg.norm(changed - hole_centre, axis=1) < hole_radius).all()


def test_voxelised_stanford_meshes_agree_with_ray_tests(shared_data):
    mesh = load_mesh(shared_data / "meshes" / "lucy.obj")
    assert mesh.is_watertight
    resolution = 48
    grid = voxelize(mesh, resolution)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, resolution, size=(1500, 3))
    lo, hi = mesh.bounds
    scale = 2 * (1 - 4 / resolution) / (hi - lo).max()
    points = (-1 + (2 * idx + 1) / resolution) / scale + (lo + hi) / 2
    agree = mesh.contains(points) == grid[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert agree.mean() > 0.995


def test_occupancy_is_cached_by_mesh_content(tmp_path):
    mesh_path = tmp_path / "ball.ply"
    mesh_path.write_bytes(trimesh.creation.icosphere(subdivisions=3).export(file_type="ply"))
    first = load_occupancy(mesh_path, 16, tmp_path / "cache")
    cached = cache_path(mesh_path, 16, tmp_path / "cache")
    assert cached.exists()
    mtime = cached.stat().st_mtime_ns  # reading back must not re-voxelise...
    assert np.array_equal(load_occupancy(mesh_path, 16, tmp_path / "cache"), first)
    assert cached.stat().st_mtime_ns == mtime
    # ...and a changed mesh or resolution must not reuse it.
    mesh_path.write_bytes(trimesh.creation.box().export(file_type="ply"))
    assert cache_path(mesh_path, 16, tmp_path / "cache") != cached
    assert cache_path(mesh_path, 32, tmp_path / "cache") != cache_path(
        mesh_path, 16, tmp_path / "cache"
    )
    assert not np.array_equal(load_occupancy(mesh_path, 16, tmp_path / "cache"), first)


def test_corrupt_cache_is_rebuilt(tmp_path):
    mesh_path = tmp_path / "ball.ply"
    mesh_path.write_bytes(trimesh.creation.icosphere(subdivisions=3).export(file_type="ply"))
    good = load_occupancy(mesh_path, 16, tmp_path)
    cache_path(mesh_path, 16, tmp_path).write_bytes(b"not an npz")
    assert np.array_equal(load_occupancy(mesh_path, 16, tmp_path), good)


def test_truncated_mesh_is_named_in_the_error(tmp_path):
    data = trimesh.creation.icosphere(subdivisions=3).export(file_type="ply")
    broken = tmp_path / "broken.ply"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(MeshError, match=r"broken\.ply"):
        load_mesh(broken)


def test_find_mesh_reports_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"meshes/dragon\.ply.*paths\.data_dir"):
        find_mesh("dragon", tmp_path / "data", tmp_path / "cache")
    (tmp_path / "data" / "meshes").mkdir(parents=True)
    (tmp_path / "data" / "meshes" / "dragon.obj").write_text("v 0 0 0\n")
    assert find_mesh("dragon", tmp_path / "data", tmp_path / "cache").name == "dragon.obj"


def test_builtin_trefoil_is_a_closed_solid(tmp_path):
    mesh = trefoil_mesh()
    assert mesh.is_watertight and mesh.volume > 0
    path = find_mesh("trefoil", tmp_path / "no-data", tmp_path / "cache")
    grid = voxelize(load_mesh(path), 32)
    assert 0.01 < grid.mean() < 0.2
