"""Finding a mesh by name, and a shape the project makes itself (for offline demos)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import trimesh

from sinelr.io import atomic_write

MESH_SUFFIXES = (".ply", ".obj")


def trefoil_mesh(
    tube_radius: float = 0.35, n_along: int = 480, n_around: int = 40
) -> trimesh.Trimesh:
    """A closed tube around a trefoil knot: thin, curved, self-entangled, hard for low rank.

    The tube follows the Frenet frame of ``(sin t + 2 sin 2t, cos t - 2 cos 2t, -sin 3t)``,
    whose curvature never vanishes, so the frame is smooth and closes on itself.
    """
    t = np.linspace(0, 2 * np.pi, n_along, endpoint=False)
    r = np.stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t), -np.sin(3 * t)], 1)
    d1 = np.stack(
        [np.cos(t) + 4 * np.cos(2 * t), -np.sin(t) + 4 * np.sin(2 * t), -3 * np.cos(3 * t)], 1
    )
    d2 = np.stack(
        [-np.sin(t) - 8 * np.sin(2 * t), -np.cos(t) + 8 * np.cos(2 * t), 9 * np.sin(3 * t)], 1
    )
    tangent = d1 / np.linalg.norm(d1, axis=1, keepdims=True)
    binormal = np.cross(d1, d2)
    binormal /= np.linalg.norm(binormal, axis=1, keepdims=True)
    normal = np.cross(binormal, tangent)
    theta = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    ring = (
        np.cos(theta)[None, :, None] * normal[:, None]
        + np.sin(theta)[None, :, None] * binormal[:, None]
    )
    vertices = (r[:, None] + tube_radius * ring).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_along), np.arange(n_around), indexing="ij")
    a = i * n_around + j
    b = ((i + 1) % n_along) * n_around + j
    c = ((i + 1) % n_along) * n_around + (j + 1) % n_around
    d = i * n_around + (j + 1) % n_around
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)
    mesh = trimesh.Trimesh(vertices, faces, process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


BUILTIN_SHAPES: dict[str, Callable[[], trimesh.Trimesh]] = {"trefoil": trefoil_mesh}


def find_mesh(shape: str, data_dir: Path, cache_dir: Path) -> Path:
    """``meshes/<shape>.{ply,obj}`` under the data dir, a path to a mesh, or a built-in shape."""
    as_path = Path(shape).expanduser()
    if as_path.suffix.lower() in MESH_SUFFIXES:
        if as_path.is_file():
            return as_path
        raise FileNotFoundError(f"mesh file {as_path.resolve()} does not exist")
    looked = [data_dir / "meshes" / f"{shape}{suffix}" for suffix in MESH_SUFFIXES]
    for path in looked:
        if path.is_file():
            return path
    if shape in BUILTIN_SHAPES:
        path = cache_dir / "meshes" / f"{shape}.ply"
        if not path.is_file():
            data = BUILTIN_SHAPES[shape]().export(file_type="ply")
            atomic_write(path, lambda handle: handle.write(data))
        return path
    tried = " or ".join(str(p.resolve()) for p in looked)
    raise FileNotFoundError(
        f"mesh {shape!r} not found: looked for {tried}. Put a .ply/.obj mesh there, point "
        "paths.data_dir (or the SINELR_DATA variable) at a directory holding meshes/, or pass "
        f"task.shape=/path/to/mesh.ply. Built-in shapes: {', '.join(BUILTIN_SHAPES)}. The "
        "Stanford meshes (bunny, dragon, lucy) are at https://graphics.stanford.edu/data/3Dscanrep/;"
        " `python -m scripts.download_data thai` fetches the Thai statue as meshes/thai.ply."
    )
