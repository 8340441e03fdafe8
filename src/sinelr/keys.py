"""Settings by dotted name (``task.lr``): of nested settings, and of command-line overrides.

What two runs' fingerprints, a sweep's overrides and the report's columns are compared by.
"""

from __future__ import annotations

from typing import Any


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings (a results.json's ``fingerprint``) as ``{"task.lr": 0.001, ...}``, so two
    runs' settings compare leaf by leaf."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def override_key(override: str) -> str:
    """The setting a command-line override names: ``checkpoint.every_n_epochs`` of
    ``+checkpoint.every_n_epochs=2`` (and of ``~checkpoint.every_n_epochs``)."""
    return override.lstrip("+~").partition("=")[0]
