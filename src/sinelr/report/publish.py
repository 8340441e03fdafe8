"""W&B publishing, in one place: a finished run (:func:`publish_to_wandb`, which the driver
calls) and a report over many runs (:func:`upload_wandb`, ``scripts/report.py --wandb``).

Both go through ``sinelr.loggers``, which builds the W&B logger: online only with a key and a
reachable server, offline otherwise, so that publishing never waits on a network.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sinelr.report.layout import TaskTable, layout
from sinelr.report.load import RUN_HEADER, load_results, run_label

if TYPE_CHECKING:
    from sinelr.results import RunResult

log = logging.getLogger(__name__)


def results_table(metrics: Mapping[str, float]) -> tuple[list[str], list[list[Any]]]:
    """The run's metrics as a table: one row per item, one column per metric.

    A metric named ``<split>/<metric>/<item>`` (NeRF's ``test/psnr/view_003``) is the item's;
    the others (``test/psnr``) form the row ``all``.
    """
    rows: dict[str, dict[str, float]] = {"all": {}}
    for name, value in metrics.items():
        parts = name.split("/")
        item, metric = (parts[-1], "/".join(parts[:-1])) if len(parts) > 2 else ("all", name)
        rows.setdefault(item, {})[metric] = value
    columns = sorted({metric for row in rows.values() for metric in row})
    table = [[item, *(row.get(c) for c in columns)] for item, row in rows.items()]
    return ["item", *columns], table


def _csv_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, [[_number(cell) for cell in row] for row in rows]


def _number(cell: str) -> Any:
    try:
        return float(cell)
    except ValueError:
        return cell


def _run_media(data: dict, output_dir: Path) -> dict[str, Any]:
    """The run's tables and images for W&B: the ``results`` table (:func:`results_table`), one
    table per CSV and one image per PNG the task wrote in ``output_dir``."""
    import wandb

    media: dict[str, Any] = {}
    if data["metrics"]:
        columns, rows = results_table(data["metrics"])
        media["results"] = wandb.Table(columns=columns, data=rows)
    for path in sorted(output_dir.glob("*.csv")):
        columns, rows = _csv_table(path)
        media[f"tables/{path.stem}"] = wandb.Table(columns=columns, data=rows)
    for path in sorted(output_dir.glob("*.png")):
        media[f"images/{path.stem}"] = wandb.Image(str(path), caption=path.name)
    return media


def publish_to_wandb(
    cfg: DictConfig, labels: Mapping[str, Any], result: RunResult, output_dir: Path
) -> None:
    """Log a finished run to W&B: one place for every task, from results.json and the run dir.

    ``cfg.logger.wandb`` configures the run (nothing happens without it). Config, the
    result's scalars (metrics, parameter counts, compression rate, status) as the
    run's summary, and the run's tables and images (:func:`_run_media`: NeRF's renders,
    theory's figures, bof's slices). Uses the run that training logged to, or starts one
    (``theory`` trains nothing). Failures cost a warning, never the run; the W&B run is
    finished either way, so that the next job of a multirun in this process gets its own.
    """
    config = (cfg.get("logger") or {}).get("wandb")
    if not config:
        return
    import wandb

    try:
        run = wandb.run or instantiate(config, **labels).experiment
    except Exception:
        log.exception("wandb: could not start a run; nothing logged")
        return
    try:
        run.config.update(OmegaConf.to_container(cfg, resolve=True), allow_val_change=True)
        data = result.to_json()
        run.summary.update(
            {
                **data["metrics"],
                **{f"params/{k}": v for k, v in data["params"].items()},
                "compression_rate": data["compression_rate"],
                "status": data["status"],
                **({"error": data["error"]} if "error" in data else {}),
            }
        )
        media = _run_media(data, output_dir)
        if media:
            run.log(media)
        log.info("wandb: %d tables and images logged to %s", len(media), run.dir)
    except Exception:
        log.exception("wandb: logging the run's results failed")
    finally:
        run.finish()


SUMMARY_COLUMNS = [
    "task", "preset", "settings", "data", "method", "rank", "omega", "params", "metric",
    "mean", "std", "seeds", "paper", "delta", "paper_table", "omega_mode", "omega_end",
]  # fmt: skip


def summary_rows(tables: list[TaskTable]) -> list[list]:
    """One row per run cell (task, preset, data item, method, rank, ω, ω mode), on the paper's
    scale, with the paper's number and the difference where the paper has one. ``omega`` is
    where the cell's ω started (the rule's, for ``omega=auto``), ``omega_mode`` how it was had
    (``""`` given, ``auto``, ``learnt``, ``learnt from auto``), ``omega_end`` where a learnt ω
    ended."""
    rows = []
    for table in tables:
        for row in table.rows:
            for item, cell in row.cells.items():
                mean = cell.mean * table.scale
                paper = row.paper.values.get(item) if row.paper else None
                rows.append([
                    table.task, table.preset, table.settings, item, row.method, row.rank,
                    cell.omega, row.params, table.metrics.get(item, ""), mean,
                    cell.std * table.scale, len(cell.values), paper,
                    None if paper is None else mean - paper, row.paper_table,
                    row.omega_mode, cell.omega_end,
                ])  # fmt: skip
    return rows


def upload_wandb(
    paths: Iterable[str | Path], save_dir: str | Path, project: str = "sinelr"
) -> Path:
    """Log the summary table (and the params plots, if the dashboard was written to
    ``save_dir``) as one W&B run. Online only with a key and a reachable server, as every run
    (``sinelr.loggers.wandb_logger``); otherwise an offline run under ``save_dir/wandb`` that
    ``wandb sync`` uploads later. Returns the run's directory."""
    import wandb

    from sinelr.loggers import wandb_logger

    results = load_results(paths, completed_only=False)
    tables = layout(results)
    logger = wandb_logger(
        offline=None, save_dir=str(save_dir), project=project, name="report", job_type="report"
    )
    run = logger.experiment
    payload: dict = {"summary": wandb.Table(columns=SUMMARY_COLUMNS, data=summary_rows(tables))}
    failed = [
        [*run_label(r), str(r.get("error", ""))] for r in results if r.get("status") == "failed"
    ]
    payload["failed"] = wandb.Table(columns=[*RUN_HEADER, "error"], data=failed)
    for table in tables:
        plot = Path(save_dir) / "plots" / f"{table.slug}_params.png"
        if plot.is_file():
            payload[f"plots/{table.slug}"] = wandb.Image(str(plot))
    run.log(payload)
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
