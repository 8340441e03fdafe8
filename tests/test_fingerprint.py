"""A run's identity: fingerprints written before a setting existed still match the runs they
describe, and the dense baseline is the same run whatever its task's default adapter."""

from __future__ import annotations

import sinelr.driver
from sinelr.fingerprint import ADDED_SETTINGS, fingerprint_diff
from tests.helpers import compose_config


def _current() -> dict:
    return {"task": {"name": "bof"}, "rank": 1, "lowrank": {"gain": None, "detach_norm": False}}


def test_a_fingerprint_from_before_an_added_setting_matches_its_old_value():
    saved = {"task": {"name": "bof"}, "rank": 1, "lowrank": {"gain": None}}
    assert "lowrank.detach_norm" in ADDED_SETTINGS
    assert fingerprint_diff(saved, _current()) == []


def test_an_added_setting_at_another_value_is_still_a_difference():
    saved = {"task": {"name": "bof"}, "rank": 1, "lowrank": {"gain": None}}
    current = _current()
    current["lowrank"]["detach_norm"] = True
    assert fingerprint_diff(saved, current) == [
        "lowrank.detach_norm: False (checkpoint) vs True (now)"
    ]


def test_other_missing_settings_are_differences():
    saved = {"task": {"name": "bof"}, "lowrank": {"gain": None, "detach_norm": False}}
    assert fingerprint_diff(saved, _current()) == ["rank: None (checkpoint) vs 1 (now)"]


def test_the_dense_baseline_records_no_adapter_and_leaves_the_callers_config(tmp_path):
    """glue's config defaults to ``adapter=lora``; ``rank=null`` is full fine-tuning, which no
    adapter takes part in, so neither results.json nor its fingerprint names one (a dense run
    is the same run whatever the default). The run reads its own copy of the config: the
    caller's stays as composed, for whatever it composes next from it."""
    cfg = compose_config("task=glue", "rank=null", "dry_run=true")
    result = sinelr.driver.run(cfg, tmp_path)
    assert result.status == "dry_run" and result.method == "dense"
    assert result.adapter is None and result.fingerprint["adapter"] is None
    assert cfg.adapter == "lora"
