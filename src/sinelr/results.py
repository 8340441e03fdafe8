"""results.json: one per run, exactly as docs/contract.md says (extra keys only added)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sinelr.io import atomic_write_json

RESULTS_FILE = "results.json"
STATUSES = ("completed", "dry_run", "failed")
#: The ``method`` of the full-rank baseline (``rank=null``), which no layer implements.
DENSE = "dense"
#: What a sine twin's registered name, and so its runs' ``method``, adds to its plain
#: variant's (``sine_lora``). Here rather than beside the registry so that the report, which
#: reads these names, need not import the layers (torch).
SINE_PREFIX = "sine_"


@dataclass(frozen=True)
class ParamCounts:
    """results.json's ``params``: ``lowrank`` counts the factors (U,V or A,B) only;
    ``omega`` the learnt frequencies (one per sine layer with ``lowrank.learn_omega=true``),
    which ``total`` and ``trainable`` include and results.json lists only where there are any."""

    total: int
    trainable: int
    lowrank: int
    full_rank_total: int
    omega: int = 0

    def as_dict(self) -> dict[str, int]:
        counts = asdict(self)
        if not self.omega:
            del counts["omega"]
        return counts

    def compression_rate(self, adapter: bool) -> float:
        """Size relative to the full-rank network; for adapters, what is trained."""
        if self.full_rank_total == 0:
            return 0.0
        numerator = self.trainable if adapter else self.total
        return numerator / self.full_rank_total


def rank_text(rank: int | None) -> str:
    """A rank as tables, tags and labels print it: ``rank=null`` is the full-rank baseline."""
    return "full" if rank is None else str(rank)


@dataclass
class Metric:
    name: str
    value: float | None
    higher_is_better: bool


@dataclass
class Selection:
    """The metric that chooses among runs (a search's trials, a sweep's "best" setting): the
    task's validation metric, never the one reported.

    ``independent`` is False where the task has no data the test metric does not see: bof fits
    one shape, so its fit is its score; ``preset=paper`` keeps a paper's protocol that validates
    on its test data (docs/contract.md).
    """

    name: str
    value: float | None
    higher_is_better: bool
    independent: bool


@dataclass
class RunResult:
    """Everything a run reports. ``to_json`` gives docs/contract.md's keys first, extensions after.

    Extensions: ``error`` (failed runs), ``diagnostics`` (rank of each factorised layer),
    ``task_config`` (the task's resolved settings), ``output_dir``, ``resumed_from`` (the
    checkpoint a resumed run continued from), ``fingerprint`` (the settings the result depends
    on: ``skip_done=true`` reuses a completed result only when they match), ``omega_per_layer``
    and ``omega_start_per_layer`` (each sine layer's ω; :func:`sinelr.omega_record.record_omegas`),
    ``data_key`` (the ``task_config`` key naming the run's data: the report's columns),
    ``selection`` (the validation metric a search reads, :class:`Selection`), ``provenance``
    (commit, times, machine, versions, precision, command: :mod:`sinelr.provenance`).
    """

    task: str
    method: str
    rank: int | None
    omega: float | None
    adapter: str | None
    seed: int
    preset: str
    metric: Metric
    params: ParamCounts = field(default_factory=lambda: ParamCounts(0, 0, 0, 0))
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    wall_time_s: float = 0.0
    device: str = "cpu"
    status: str = "failed"
    error: str | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] = field(default_factory=dict)
    output_dir: str = ""
    resumed_from: str | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    omega_per_layer: dict[str, float] = field(default_factory=dict)
    omega_start_per_layer: dict[str, float] = field(default_factory=dict)
    data_key: str | None = None
    selection: Selection | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        adapter = self.adapter is not None
        metric = asdict(self.metric)
        if self.status != "completed":
            metric["value"] = None
        data: dict[str, Any] = {
            "task": self.task,
            "method": self.method,
            "rank": self.rank,
            "omega": self.omega,
            "adapter": self.adapter,
            "params": self.params.as_dict(),
            "compression_rate": self.params.compression_rate(adapter),
            "metric": metric,
            "metrics": {k: v for k, v in self.metrics.items() if math.isfinite(v)},
            "seed": self.seed,
            "preset": self.preset,
            "steps": self.steps,
            "wall_time_s": round(self.wall_time_s, 3),
            "device": self.device,
            "status": self.status,
        }
        if self.error is not None:
            data["error"] = self.error
        data["diagnostics"] = self.diagnostics
        data["task_config"] = _strict_json(self.task_config)
        if self.data_key is not None:
            data["data_key"] = self.data_key
        data["output_dir"] = self.output_dir
        if self.resumed_from is not None:
            data["resumed_from"] = self.resumed_from
        if self.fingerprint:
            data["fingerprint"] = _strict_json(self.fingerprint)
        if self.omega_per_layer:
            data["omega_per_layer"] = self.omega_per_layer
        if self.omega_start_per_layer:
            data["omega_start_per_layer"] = self.omega_start_per_layer
        if self.selection is not None:
            selection = asdict(self.selection)
            if self.status != "completed" or not _finite(selection["value"]):
                selection["value"] = None
            data["selection"] = selection
        if self.provenance:
            data["provenance"] = self.provenance
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """The result a results.json describes (the inverse of :meth:`to_json`)."""
        names = {f.name for f in fields(cls)}
        kwargs = {key: value for key, value in data.items() if key in names}
        kwargs.update(metric=Metric(**data["metric"]), params=ParamCounts(**data["params"]))
        if data.get("selection") is not None:
            kwargs["selection"] = Selection(**data["selection"])
        return cls(**kwargs)

    def write(self, output_dir: str | Path) -> Path:
        return atomic_write_json(Path(output_dir) / RESULTS_FILE, self.to_json())


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _strict_json(settings: Any) -> Any:
    """``settings`` with each non-finite float as its name (``"inf"``, ``"nan"``).

    JSON has no inf or NaN, and a run refused for ``task.lr=inf`` must still write the
    results.json that names its error, rather than fail again while writing it.
    """
    if isinstance(settings, dict):
        return {key: _strict_json(value) for key, value in settings.items()}
    if isinstance(settings, list):
        return [_strict_json(value) for value in settings]
    if isinstance(settings, float) and not math.isfinite(settings):
        return str(settings)
    return settings
