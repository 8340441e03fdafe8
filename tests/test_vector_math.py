"""The oneMKL vector-math warm-up that same-seed determinism rests on (``sinelr.vector_math``).

The race it prevents hits a few processes in a hundred, too rarely for a unit test to see;
``scripts/check_determinism.py`` measures its effect on training (benchmarks/RESULTS.md §7).
These tests keep the warm-up complete and in place.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import sinelr.driver
from sinelr.vector_math import VM_OPS
from tasks.bof import BofTask
from tests.helpers import compose_config


def test_the_warm_up_covers_every_op_pytorch_sends_to_onemkl():
    header = Path(torch.__file__).parent / "include" / "ATen" / "cpu" / "vml.h"
    if not header.exists():
        pytest.skip(f"this torch ships no ATen headers ({header} is missing)")
    # Active lines only: the header comments out the ops it keeps away from oneMKL.
    routed = set(re.findall(r"^IMPLEMENT_VML_MKL\((\w+),", header.read_text(), re.MULTILINE))
    assert routed, "vml.h changed shape: update this test's pattern"
    assert routed == set(VM_OPS)


def test_every_run_settles_vector_math_before_building_its_model(monkeypatch, tmp_path):
    events: list[str] = []
    monkeypatch.setattr(sinelr.driver, "settle_vector_math", lambda: events.append("settle"))
    build = BofTask.build_model
    monkeypatch.setattr(
        BofTask, "build_model", lambda self, lowrank: events.append("build") or build(self, lowrank)
    )
    cfg = compose_config("task=bof", "rank=1", "dry_run=true")
    result = sinelr.driver.run(cfg, tmp_path)
    assert result.status == "dry_run"
    assert events[0] == "settle" and events.count("settle") == 1 and "build" in events
