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


def canonical_job(job: list[str]) -> list[str]:
    """A sweep job's overrides with ``omega=null`` where ``rank=null`` (the dense baseline takes
    no ω): the sweepers run it once, and the record of a sweep names it so."""
    if "rank=null" not in job:
        return job
    return [f"{o.partition('=')[0]}=null" if override_key(o) == "omega" else o for o in job]
