"""Fetch the paper's public datasets into ``paths.data_dir`` (default ``$SINELR_DATA`` or ./data).

    python -m scripts.download_data llff              # the 8 LLFF scenes (~1.9 GB zip)
    python -m scripts.download_data llff --fern-only  # fern alone, from NeRF's example data
    python -m scripts.download_data llff --url FILE_OR_URL   # a copy you already have
    python -m scripts.download_data thai              # the Thai statue mesh (a large scan)

Offline, it says what it could not reach and where to put the files by hand. Extraction goes to
a temporary folder first, so an interrupted download never leaves a half scene (or mesh) behind.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

# The NeRF authors' release: nerf_llff_data.zip on their shared drive, and the example data
# (fern and lego) on their project server.
LLFF_URL = (
    "https://drive.usercontent.google.com/download?id=16VnMcF1KJYxN9QId6TClMsZRahHNMW5g"
    "&export=download&confirm=t"
)
LLFF_FERN_URL = (
    "http://cseweb.ucsd.edu/~viscomp/projects/LF/papers/ECCV20/nerf/nerf_example_data.zip"
)
LLFF_SCENES = ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex")
# The paper's third occupancy shape: the Thai statue ("statuette") of the Stanford 3D Scanning
# Repository's XYZ RGB models, a gzip'd binary PLY (research use; credit Stanford and XYZ RGB).
THAI_URL = "http://graphics.stanford.edu/data/3Dscanrep/xyzrgb/xyzrgb_statuette.ply.gz"


def default_data_dir() -> Path:
    return Path(os.environ.get("SINELR_DATA", "data")).expanduser()


def fetch(url: str, target: Path) -> None:
    """Download ``url`` (or copy a ``file://`` URL) to ``target`` with a progress bar."""
    with urllib.request.urlopen(url, timeout=30) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn())
        with Progress(*columns, TransferSpeedColumn()) as progress:
            task = progress.add_task(f"fetching {target.name}", total=total)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                progress.advance(task, len(chunk))


def extract_llff(archive: Path, data_dir: Path) -> list[str]:
    """Move every ``nerf_llff_data/<scene>/`` in ``archive`` to ``data_dir/nerf_llff_data/``."""
    try:
        with zipfile.ZipFile(archive) as zf, tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            zf.extractall(tmp)
            roots = [p for p in Path(tmp).rglob("nerf_llff_data") if p.is_dir()]
            if not roots:
                raise SystemExit(f"{archive} holds no nerf_llff_data/ folder: not an LLFF archive")
            dest = data_dir / "nerf_llff_data"
            dest.mkdir(parents=True, exist_ok=True)
            scenes = []
            for scene in sorted(
                p for p in roots[0].iterdir() if (p / "poses_bounds.npy").is_file()
            ):
                if (dest / scene.name).exists():
                    shutil.rmtree(dest / scene.name)
                shutil.move(str(scene), dest / scene.name)
                scenes.append(scene.name)
            return scenes
    except zipfile.BadZipFile:
        raise SystemExit(f"{archive} is not a zip file (truncated download?): run again") from None


def fetch_or_exit(url: str, target: Path, offline: str) -> None:
    """``fetch``, or exit saying what failed and, in ``offline``, how to get the file by hand."""
    try:
        fetch(url, target)
    except (urllib.error.URLError, OSError) as error:
        raise SystemExit(f"could not fetch {url} ({error}).\nOffline: {offline}") from None


def download_llff(data_dir: Path, url: str) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        archive = Path(tmp) / "llff.zip"
        fetch_or_exit(
            url,
            archive,
            "download nerf_llff_data.zip from the NeRF authors' release on a machine with a "
            f"network and unpack it so that {data_dir / 'nerf_llff_data'}/<scene>/ holds "
            f"poses_bounds.npy and images_8/ (scenes: {', '.join(LLFF_SCENES)}), or pass --url "
            "with a local copy.",
        )
        return extract_llff(archive, data_dir)


def download_thai(data_dir: Path, url: str) -> Path:
    """Fetch the gzip'd statuette PLY and write it, decompressed, as ``meshes/thai.ply``.

    The mesh is checked to begin as a PLY before it replaces anything, so a truncated download
    or an HTML error page never becomes a mesh the occupancy task would voxelise.
    """
    meshes = data_dir / "meshes"
    meshes.mkdir(parents=True, exist_ok=True)
    target = meshes / "thai.ply"
    with tempfile.TemporaryDirectory(dir=meshes) as tmp:
        archive, mesh = Path(tmp) / "thai.ply.gz", Path(tmp) / "thai.ply"
        fetch_or_exit(
            url,
            archive,
            "download xyzrgb_statuette.ply.gz from the Stanford 3D Scanning Repository on a "
            f"machine with a network, decompress it and save it as {target}, or pass --url with "
            "a local copy.",
        )
        try:
            with gzip.open(archive) as source, mesh.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        except (OSError, EOFError) as error:
            raise SystemExit(f"{url} is not a complete gzip file ({error}): run again") from None
        with mesh.open("rb") as handle:
            if handle.read(3) != b"ply":
                raise SystemExit(f"{url} does not hold a PLY mesh: check the URL")
        mesh.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["llff", "thai"])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--fern-only", action="store_true", help="NeRF's smaller example data")
    parser.add_argument("--url", help="another source: a URL or a local .zip / .ply.gz path")
    args = parser.parse_args(argv)
    if args.dataset == "thai":
        url = args.url or THAI_URL
    else:
        url = args.url or (LLFF_FERN_URL if args.fern_only else LLFF_URL)
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    if args.dataset == "thai":
        print(f"Thai statue: {download_thai(args.data_dir, url)}")
        return 0
    scenes = download_llff(args.data_dir, url)
    print(f"LLFF scenes in {args.data_dir / 'nerf_llff_data'}: {', '.join(scenes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
