"""Mesh → solid occupancy grid, filled inside, cached on disk.

Scanned meshes are rarely watertight (the Stanford bunny is open at the base, the dragon has
holes), so a flood fill from outside leaks into them. Instead, along each axis a ray through
every column of voxel centres counts surface crossings: a voxel is inside where the count below
it is odd. A hole only corrupts the columns through it, and those differ between the three
axes, so the grid keeps a voxel where at least two axes say it is inside.

Grid convention: ``R`` voxels per side spanning ``[-1, 1]``; voxel ``(i, j, k)`` is centred at
``-1 + (2·(i, j, k) + 1) / R``; the mesh is centred and scaled so its longest side leaves a
two-voxel margin.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import trimesh

from sinelr.errors import InputError
from sinelr.io import atomic_write

log = logging.getLogger(__name__)

# Bump when the grid a mesh gives changes, so caches built by older code are not reused.
VOXELIZER_VERSION = 1
MARGIN_VOXELS = 2
# Columns sit a generic sub-voxel offset away from the integer lattice, so a ray never passes
# exactly through an edge or vertex of a mesh whose vertices lie on the lattice.
_COLUMN_OFFSET = np.array([1.2345e-4, 2.3456e-4])
# Candidate (triangle, column) pairs handled at once; bounds memory for huge triangles.
_CHUNK = 1 << 22


class MeshError(InputError):
    """A mesh file that cannot be read, or holds no surface."""


def load_mesh(path: Path) -> trimesh.Trimesh:
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:
        raise MeshError(
            f"could not read mesh {path}: {type(error).__name__}: {error}. "
            "The file may be truncated or not a .ply/.obj; replace it with a good copy."
        ) from error
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise MeshError(f"mesh {path} holds no triangles; is it a point cloud or truncated?")
    if not np.isfinite(mesh.vertices).all():
        raise MeshError(f"mesh {path} has non-finite vertex coordinates; the file is corrupt")
    return mesh


def normalised_triangles(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """Triangles ``(F, 3, 3)`` in voxel-index coordinates (voxel centres at integers)."""
    lo, hi = mesh.bounds
    extent = float((hi - lo).max())
    if extent <= 0:
        raise MeshError("mesh has zero extent")
    half = 1.0 - 2.0 * MARGIN_VOXELS / resolution
    unit = (mesh.vertices - (lo + hi) / 2) * (2 * half / extent)  # in [-half, half]
    index = (unit + 1.0) * resolution / 2 - 0.5
    return index[mesh.faces]


def _axis_parity(tris: np.ndarray, axis: int, resolution: int) -> np.ndarray:
    """Inside/outside by crossing parity along ``axis``, indexed ``[other1, other2, axis]``."""
    b, c = [a for a in range(3) if a != axis]
    p = tris[:, :, [b, c]] - _COLUMN_OFFSET
    depth = tris[:, :, axis]
    lo = np.clip(np.ceil(p.min(axis=1)), 0, resolution - 1).astype(np.int64)
    hi = np.clip(np.floor(p.max(axis=1)), 0, resolution - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    counts = span[:, 0] * span[:, 1]  # lattice columns in each triangle's bounding box
    cumulative = np.cumsum(counts)
    crossings = np.zeros((resolution, resolution, resolution + 1), dtype=np.uint8)
    start = 0
    while start < len(tris):
        done = cumulative[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cumulative, done + _CHUNK, side="right")))
        chunk = np.arange(start, min(stop, len(tris)))
        start = stop
        n = counts[chunk]
        tri = np.repeat(chunk, n)
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        jj = lo[tri, 0] + offset // span[tri, 1]
        kk = lo[tri, 1] + offset % span[tri, 1]
        q = np.stack([jj, kk], axis=1).astype(np.float64)
        v0, v1, v2 = p[tri, 0], p[tri, 1], p[tri, 2]
        w0 = _edge(v1, v2, q)
        w1 = _edge(v2, v0, q)
        w2 = _edge(v0, v1, q)
        area = w0 + w1 + w2
        inside = (area != 0) & (((w0 > 0) & (w1 > 0) & (w2 > 0)) | ((w0 < 0) & (w1 < 0) & (w2 < 0)))
        tri, jj, kk = tri[inside], jj[inside], kk[inside]
        w0, w1, w2, area = w0[inside], w1[inside], w2[inside], area[inside]
        t = (w0 * depth[tri, 0] + w1 * depth[tri, 1] + w2 * depth[tri, 2]) / area
        first_after = np.clip(np.floor(t).astype(np.int64) + 1, 0, resolution)
        np.add.at(crossings, (jj, kk, first_after), 1)
    # Crossings below voxel i: cumulative sum; only parity matters, so uint8 wrap-around is fine.
    return (np.cumsum(crossings, axis=2, dtype=np.uint8)[:, :, :resolution] & 1).astype(bool)


def _edge(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (b[:, 0] - a[:, 0]) * (q[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (q[:, 0] - a[:, 0])


def voxelize(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """Solid occupancy ``(R, R, R)`` bool, indexed ``[x, y, z]``: majority of three parity fills."""
    tris = normalised_triangles(mesh, resolution)
    votes = np.zeros((resolution,) * 3, dtype=np.uint8)
    for axis in range(3):
        parity = _axis_parity(tris, axis, resolution)  # [other1, other2, axis]
        votes += np.moveaxis(parity, 2, axis)
    return votes >= 2


def cache_path(mesh_path: Path, resolution: int, cache_dir: Path) -> Path:
    digest = hashlib.sha256(mesh_path.read_bytes()).hexdigest()[:20]
    name = f"{mesh_path.stem}-{digest}-r{resolution}-v{VOXELIZER_VERSION}.npz"
    return cache_dir / "occupancy" / name


def load_occupancy(mesh_path: Path, resolution: int, cache_dir: Path) -> np.ndarray:
    """The solid grid of ``mesh_path`` at ``resolution``; cached while the mesh is unchanged."""
    path = cache_path(mesh_path, resolution, cache_dir)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                bits = data["occupancy"]
            grid = np.unpackbits(bits, count=resolution**3).reshape((resolution,) * 3)
            return grid.astype(bool)
        except (OSError, ValueError, KeyError) as error:
            log.warning("occupancy cache %s unreadable (%s); rebuilding it", path, error)
    log.info("voxelising %s at %d^3 (cached in %s)", mesh_path, resolution, path.parent)
    grid = voxelize(load_mesh(mesh_path), resolution)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, occupancy=np.packbits(grid.ravel()))
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    return grid
