"""The registry itself: every variant's class, by the name it was registered under.

A module of its own, below both the layers' base class (whose
:func:`~sinelr.layers.base.register_lowrank` fills it) and
:class:`~sinelr.layers.config.LowRankConfig` (which looks its variant up to refuse a setting the
variant does not read), so that neither of those two imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sinelr.errors import InputError

if TYPE_CHECKING:
    from sinelr.layers.base import LowRankLayer

#: Every variant by name, in registration order (which the report's order follows).
LOWRANK_LAYERS: dict[str, type[LowRankLayer]] = {}


def get_lowrank_class(name: str) -> type[LowRankLayer]:
    """The class registered as ``name``. An unknown name is an :class:`InputError`, as every bad
    setting is, so that ``run.py`` prints its one line (a ``KeyError`` would quote it)."""
    try:
        return LOWRANK_LAYERS[name]
    except KeyError:
        known = ", ".join(sorted(LOWRANK_LAYERS))
        raise InputError(f"unknown low-rank variant {name!r}; registered: {known}") from None
