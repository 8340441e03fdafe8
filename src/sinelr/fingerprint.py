"""A run's identity: the settings that decide what it computes, and how two runs' compare.

Two fingerprints, one nested in the other. A checkpoint carries the narrower (task settings,
rank, ω, adapter, layer settings, seed): a resumed run may train longer or on other hardware.
results.json carries the wider, with the preset and the trainer's settings: a finished result
depends on both. ``resume`` and ``ckpt_path`` compare the first, ``skip_done`` both
(:mod:`sinelr.resume`); the report groups runs by the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sinelr.keys import flatten

FINGERPRINT_KEYS = ("task", "rank", "omega", "adapter", "lowrank", "seed")
#: Trainer settings that change what a run shows, not what it computes.
PRESENTATION_KEYS = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


@dataclass(frozen=True)
class Fingerprints:
    """A run's two fingerprints, resolved from its configuration once."""

    #: What a checkpoint must match to continue this run (hardware, logging, paths may differ).
    checkpoint: dict[str, Any]
    #: What a completed results.json must match to stand for this run: :attr:`checkpoint` plus
    #: the preset and the trainer's settings but those of :data:`PRESENTATION_KEYS`.
    result: dict[str, Any]


def fingerprints(cfg: DictConfig) -> Fingerprints:
    """The fingerprints of the run ``cfg`` configures."""
    checkpoint = {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key in FINGERPRINT_KEYS
        for value in [cfg.get(key)]
    }
    trainer = OmegaConf.to_container(cfg.get("trainer") or {}, resolve=True)
    result = {
        **checkpoint,
        "preset": cfg.get("preset"),
        "trainer": {k: v for k, v in trainer.items() if k not in PRESENTATION_KEYS},
    }
    return Fingerprints(checkpoint, result)


#: Settings that joined the fingerprint after runs had been recorded, each with the value that
#: computes what those runs computed. A saved fingerprint without the key reads as having that
#: value, so ``skip_done`` and ``resume`` still recognise the earlier runs (a sweep resumed
#: after an upgrade does not start again).
ADDED_SETTINGS: dict[str, Any] = {
    "lowrank.detach_norm": False,
    "lowrank.learn_omega": False,
    "lowrank.omega_lr": 0.01,
}


def fingerprint_diff(
    saved: dict[str, Any], current: dict[str, Any], source: str = "checkpoint"
) -> list[str]:
    """The settings in which ``saved`` and ``current`` differ, one line each (empty: same run).

    A setting of :data:`ADDED_SETTINGS` that ``saved`` lacks reads as its old value, and one
    that ``current`` lacks (a task that never had it) is not compared at all.
    """
    a, b = {**ADDED_SETTINGS, **flatten(saved)}, flatten(current)
    a = {k: v for k, v in a.items() if k in b or k not in ADDED_SETTINGS}
    return [
        f"{k}: {a.get(k)!r} ({source}) vs {b.get(k)!r} (now)"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
