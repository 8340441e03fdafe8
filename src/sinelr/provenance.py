"""Where a result came from: the commit, the machine, the versions and the command.

Two runs of one command and seed give the same metric bit for bit only on one machine: CPUs with
and without native bf16 train in different precisions, and an fp32 run moves by an ulp on
another CPU (benchmarks/RESULTS.md §7). A result that does not say which commit, machine and
precision produced it cannot be pooled safely, nor shown to come after the plan it claims to
follow. None of this enters the fingerprint: the same configuration on another machine is the
same run, and ``skip_done`` must still find it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

#: CPU flags that change a run's numerics or speed: native bf16 (AVX-512 BF16, AMX), half
#: precision, and the vector widths torch's CPU kernels dispatch on; ``bf16``/``sve`` on Arm.
NUMERIC_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_tile",
    "bf16",
    "sve",
)
#: The packages whose versions a result depends on.
PACKAGES = ("torch", "lightning", "transformers", "timm", "peft", "sinelr")


def utc_now() -> str:
    """The time now, ISO 8601 in UTC to the second (``2026-12-07T20:01:02Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_state(source: Path) -> dict[str, Any]:
    """``commit`` (40 hex) and ``dirty`` of the checkout ``source`` (a file of the running code)
    is tracked in; both None where it is not tracked (an installed wheel, even one installed
    into a virtual environment inside some checkout; a copied tree) or git is missing.

    ``dirty`` counts tracked files only: the runs a sweep writes into the tree are not changes
    to the code that produced them.
    """
    directory = source.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", source.name)  # fails unless git tracks this code
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


@cache
def machine() -> dict[str, Any]:
    """The CPU's model, its numerics-relevant flags, the cores this process may use, the GPU."""
    import torch

    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    cpu = info.get("model name") or info.get("Model") or platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cpu_flags": [flag for flag in NUMERIC_CPU_FLAGS if flag in flags],
        "cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "gpu": gpu,
    }


def versions() -> dict[str, str | None]:
    """Python's version and each of :data:`PACKAGES`' (None where one is not installed)."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    import torch

    found = {name: version(name) for name in PACKAGES}
    # torch's own string carries the build (``+cu130``, ``+cpu``): which kernels ran.
    return {"python": platform.python_version(), **found, "torch": torch.__version__}


def collect(
    command: list[str],
    precision: str | None,
    started_at: str,
    earlier: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """results.json's ``provenance`` for a run started at ``started_at`` and ending now.

    ``command`` is the run's overrides as typed; ``precision`` the trainer's (``bf16-mixed``,
    ``32-true``, ...), None for a task without a trainer. ``earlier``: the provenance of each
    earlier part of a resumed run, oldest first, so that a run trained at two commits or on two
    machines says so (``resumed``).
    """
    record = {
        "git": git_state(Path(__file__).resolve()),
        "started_at": started_at,
        "finished_at": utc_now(),
        "machine": machine(),
        "versions": versions(),
        "precision": precision,
        "command": list(command),
    }
    if earlier:
        record["resumed"] = earlier
    return record


def earlier_parts(results_file: Path) -> list[dict[str, Any]]:
    """The provenance of every part of the run whose results.json is ``results_file`` (a run cut
    short and now resumed), oldest first; empty where there is none to read."""
    try:
        previous = json.loads(results_file.read_text()).get("provenance")
    except (OSError, ValueError):
        return []
    if not previous:
        return []
    parts = previous.pop("resumed", [])
    return [*parts, previous]
