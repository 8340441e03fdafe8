"""LLFF scenes: ``poses_bounds.npy`` read strictly, images, and the NeRF code's conventions.

Each row of ``poses_bounds.npy`` is one view: a 3×5 matrix flattened row-major (the
camera-to-world rotation and translation in LLFF's axis order, then the image height, width and
focal length as the last column), followed by the scene's near and far depth bounds for that
view: 17 numbers.

:func:`load_scene` turns a scene into what the NeRF literature trains on, as the original NeRF
code does (so PSNRs compare): axes re-ordered to right/up/back, the scene scaled so the nearest
bound sits at 1/0.75, poses re-centred on their average, every ``llffhold``-th view held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sinelr.errors import InputError

ROW = 17
GET_DATA = (
    "LLFF scenes live at <data_dir>/nerf_llff_data/<scene>/ (poses_bounds.npy and images_*/): "
    "fetch them with `python -m scripts.download_data llff` (the NeRF authors' release), or set "
    "SINELR_DATA (or paths.data_dir) to a directory holding nerf_llff_data/"
)


class CameraFileError(InputError):
    """A poses_bounds.npy that cannot be trusted; the message names the file and the problem."""


def load_poses_bounds(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(poses, bounds)``: ``poses`` is ``(N, 3, 5)`` and ``bounds`` ``(N, 2)``, float64."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LLFF camera file {path} not found. {GET_DATA}.")
    try:
        # No pickles: a camera file holds numbers, and loading one must not run code.
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise CameraFileError(
            f"{path} is truncated or not a NumPy .npy file ({error}); download it again"
        ) from None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != ROW:
        shape = getattr(data, "shape", None)
        raise CameraFileError(
            f"{path} holds an array of shape {shape}; LLFF's poses_bounds.npy is (views, {ROW}): "
            "a 3×5 pose and near/far bounds per view"
        )
    if len(data) == 0 or not np.issubdtype(data.dtype, np.floating):
        raise CameraFileError(f"{path} has {len(data)} views of {data.dtype}; expected floats")
    if not np.isfinite(data).all():
        rows = sorted({int(r) for r in np.nonzero(~np.isfinite(data))[0]})
        raise CameraFileError(f"{path} has non-finite numbers in views {rows}")
    poses = data[:, :15].reshape(-1, 3, 5).astype(np.float64)
    bounds = data[:, 15:].astype(np.float64)
    bad = np.nonzero((bounds[:, 0] <= 0) | (bounds[:, 1] <= bounds[:, 0]))[0]
    if len(bad):
        raise CameraFileError(
            f"{path}: views {bad.tolist()} do not have 0 < near < far (bounds {bounds[bad[0]]})"
        )
    bad = np.nonzero((poses[:, :, 4] <= 0).any(axis=1))[0]
    if len(bad):
        raise CameraFileError(
            f"{path}: views {bad.tolist()} have a non-positive height, width or focal length"
        )
    return poses, bounds


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The NeRF code's ``bd_factor``: after scaling, the nearest bound is 1 / 0.75.
BOUNDS_FACTOR = 0.75


@dataclass
class Scene:
    """A forward-facing scene in the NeRF convention.

    ``images`` is ``(N, H, W, 3)`` in [0, 1]; ``poses`` ``(N, 3, 4)`` camera-to-world in
    right/up/back axes; ``focal`` in pixels of these images.
    """

    name: str
    images: np.ndarray
    poses: np.ndarray
    bounds: np.ndarray
    focal: float
    train: np.ndarray
    test: np.ndarray

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def look_at(back: np.ndarray, up: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The 3×4 camera-to-world matrix looking along ``-back`` with ``up`` roughly up."""
    z = _normalize(back)
    x = _normalize(np.cross(up, z))
    y = np.cross(z, x)
    return np.stack([x, y, z, position], axis=1)


def average_pose(poses: np.ndarray) -> np.ndarray:
    """The mean camera: mean position, summed viewing and up axes (as LLFF's ``poses_avg``)."""
    return look_at(poses[:, :, 2].sum(0), poses[:, :, 1].sum(0), poses[:, :, 3].mean(0))


def recenter(poses: np.ndarray) -> np.ndarray:
    """Express ``(N, 3, 4)`` poses relative to their average pose."""
    bottom = np.array([[0.0, 0.0, 0.0, 1.0]])
    to_world = np.concatenate([average_pose(poses), bottom])
    homogeneous = np.concatenate([poses, np.broadcast_to(bottom, (len(poses), 1, 4))], axis=1)
    return (np.linalg.inv(to_world) @ homogeneous)[:, :3]


def scene_dir(data_dir: str | Path, scene: str) -> Path:
    """``<data_dir>/nerf_llff_data/<scene>``, or an error that lists the scenes there are."""
    root = Path(data_dir) / "nerf_llff_data"
    path = root / scene
    if path.is_dir():
        return path
    there = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = f"scenes found in {root}: {', '.join(there)}" if there else f"{root} has no scenes"
    raise FileNotFoundError(f"LLFF scene {scene!r} not found at {path} ({found}). {GET_DATA}.")


def image_paths(scene: Path, factor: int) -> list[Path]:
    """The images of ``images_<factor>/`` (``images/`` for factor 1), sorted by name."""
    folder = scene / ("images" if factor == 1 else f"images_{factor}")
    if not folder.is_dir():
        factors = sorted(
            int(p.name[7:]) if p.name.startswith("images_") else 1
            for p in scene.iterdir()
            if p.is_dir() and (p.name == "images" or p.name[7:].isdigit())
        )
        have = ", ".join(str(f) for f in factors) or "none"
        raise FileNotFoundError(
            f"{folder} not found: the scene has no images downsampled by {factor} (factors "
            f"present: {have}). Pass task.factor=<one of those>, or make the folder with LLFF's "
            "downsampling (e.g. ImageMagick: mogrify -resize 12.5% into images_8/)."
        )
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder} holds no .png or .jpg images")
    return paths


def read_image(path: Path) -> np.ndarray:
    """An RGB image as float32 in [0, 1]; an unreadable file is named."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CameraFileError(
            f"cannot read image {path} ({error}); the file is corrupt or not an image: "
            "replace it from the LLFF download"
        ) from None


def load_scene(data_dir: str | Path, scene: str, factor: int = 8, llffhold: int = 8) -> Scene:
    """Scene ``scene`` at ``1/factor`` resolution, in the NeRF convention (module docstring)."""
    if factor < 1 or llffhold < 2:
        raise InputError(
            f"task.factor must be >= 1 and task.llffhold >= 2, got {factor}, {llffhold}"
        )
    path = scene_dir(data_dir, scene)
    poses, bounds = load_poses_bounds(path / "poses_bounds.npy")
    paths = image_paths(path, factor)
    if len(paths) != len(poses):
        raise CameraFileError(
            f"{path}: {len(paths)} images in {paths[0].parent.name}/ but {len(poses)} poses in "
            "poses_bounds.npy; every view needs both (re-download the scene)"
        )
    images = [read_image(p) for p in paths]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise CameraFileError(f"{paths[0].parent}: images differ in size ({sorted(shapes)})")
    width = images[0].shape[1]
    focal = float(poses[0, 2, 4]) * width / float(poses[0, 1, 4])
    # LLFF stores [down, right, back]; NeRF works in [right, up, back].
    rotation = np.stack([poses[:, :, 1], -poses[:, :, 0], poses[:, :, 2]], axis=2)
    c2w = np.concatenate([rotation, poses[:, :, 3:4]], axis=2)
    scale = 1.0 / (bounds.min() * BOUNDS_FACTOR)
    c2w[:, :, 3] *= scale
    views = np.arange(len(poses))
    test = views[::llffhold]
    return Scene(
        name=scene,
        images=np.stack(images),
        poses=recenter(c2w).astype(np.float32),
        bounds=(bounds * scale).astype(np.float32),
        focal=focal,
        train=np.setdiff1d(views, test),
        test=test,
    )
