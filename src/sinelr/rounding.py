"""ω to the precision ``omega=auto`` has: the rule rounds the ω it picks, and the report rounds
a learnt ω where it ended. A module of its own, without torch, so that the report stays so."""

from __future__ import annotations


def round_significant(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` significant figures: the rule is not more precise than that."""
    return float(f"{value:.{digits - 1}e}")
