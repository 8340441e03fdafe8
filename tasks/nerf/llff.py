"""LLFF's ``poses_bounds.npy``, read strictly: a bad file is named, never half-used.

Each row is one view: a 3×5 matrix flattened row-major (the camera-to-world rotation and
translation in LLFF's axis order, then the image height, width and focal length as the last
column), followed by the scene's near and far depth bounds for that view: 17 numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROW = 17
GET_DATA = (
    "LLFF scenes live at <data_dir>/nerf_llff_data/<scene>/ (poses_bounds.npy and images_*/): "
    "download nerf_llff_data from the NeRF authors' release, or set SINELR_DATA to a directory "
    "holding it"
)


class CameraFileError(ValueError):
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
