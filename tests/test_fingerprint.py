"""Fingerprints written before a setting existed still match the runs they describe."""

from __future__ import annotations

from sinelr.fingerprint import ADDED_SETTINGS, fingerprint_diff


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
