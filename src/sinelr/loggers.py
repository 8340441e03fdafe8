"""Experiment loggers that never cost a run: wandb goes offline instead of waiting for a network."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from lightning.pytorch.loggers.logger import Logger
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from sinelr.results import RunResult

log = logging.getLogger(__name__)

WANDB_URL = "https://api.wandb.ai"


def network_reachable(url: str = WANDB_URL, timeout_s: float = 2.0) -> bool:
    """True if ``url`` answers an HTTP request within ``timeout_s``, with any status.

    An HTTP answer, not a TCP connect: sandboxes and proxies often accept connections to
    anywhere and then never answer, which a connect test would take for a network.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered, if only with an error status
    except (OSError, ValueError):
        return False


def wandb_credentials() -> bool:
    """True if wandb has an API key (environment or ``~/.netrc``), i.e. could log in."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urllib.parse.urlparse(WANDB_URL).hostname) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs: Any):
    """A ``WandbLogger`` that is offline when wandb's server cannot be reached or used.

    ``offline=None`` (unless ``WANDB_MODE`` decides) goes online only with credentials and an
    answer from the server within 2 seconds: wandb's own start-up otherwise retries for
    minutes on a closed network, or asks for a key that no one is there to type.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        mode = os.environ.get("WANDB_MODE")
        if mode:
            offline = mode in ("offline", "disabled")
        elif not wandb_credentials():
            offline = True
            log.warning("wandb: no API key (WANDB_API_KEY or `wandb login`), logging offline")
        else:
            offline = not network_reachable()
            if offline:
                log.warning("wandb: %s unreachable, logging offline", WANDB_URL)
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(offline=offline, **kwargs)


class GuardedLogger(Logger):
    """Wraps a logger so that its failures cost a warning, never the run.

    The first exception from the wrapped logger is logged with its traceback and the logger is
    switched off; training, checkpoints and results.json go on.
    """

    def __init__(self, logger: Logger) -> None:
        super().__init__()
        self._logger = logger
        self._failed = False

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._failed:
            return None
        try:
            return getattr(self._logger, method)(*args, **kwargs)
        except Exception:
            self._failed = True
            log.exception(
                "logger %s failed in %s; it is off for the rest of the run",
                type(self._logger).__name__,
                method,
            )
            return None

    @property
    def name(self) -> str | None:
        return self._logger.name

    @property
    def version(self) -> int | str | None:
        return self._logger.version

    @property
    def save_dir(self) -> str | None:
        return self._logger.save_dir

    @property
    def log_dir(self) -> str | None:
        return getattr(self._logger, "log_dir", None)

    @property
    def experiment(self) -> Any:
        return self._logger.experiment

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._call("log_metrics", metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self._call("log_hyperparams", params, *args, **kwargs)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        self._call("log_graph", model, input_array)

    def save(self) -> None:
        self._call("save")

    def finalize(self, status: str) -> None:
        self._call("finalize", status)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._call("after_save_checkpoint", checkpoint_callback)


def make_loggers(configs: Mapping[str, Any] | None, labels: Mapping[str, Any]) -> list[Logger]:
    """The configured loggers, each guarded; a config's null ``group``/``tags`` get ``labels``'.

    The run's labels (W&B ``group`` = the experiment, ``tags`` = task, method, rank, preset)
    are known only once the driver has read the command line, so the logger configs leave them
    null and the driver fills them in.
    """
    loggers = []
    for config in (configs or {}).values():
        if config:
            extra = {k: v for k, v in labels.items() if k in config and config[k] is None}
            loggers.append(GuardedLogger(instantiate(config, **extra)))
    return loggers


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


def publish_to_wandb(
    cfg: DictConfig, labels: Mapping[str, Any], result: RunResult, output_dir: Path
) -> None:
    """Log a finished run to W&B: one place for every task, from results.json and the run dir.

    ``cfg.logger.wandb`` configures the run (nothing happens without it). Config, the
    result's scalars (metrics, parameter counts, compression rate, status) as the
    run's summary, a ``results`` table (:func:`results_table`), one table per CSV and one image
    per PNG the task wrote in ``output_dir`` (NeRF's renders, theory's figures, bof's slices).
    Uses the run that training logged to, or starts one (``theory`` trains nothing). Failures
    cost a warning, never the run; the W&B run is finished either way, so that the next job of
    a multirun in this process gets its own.
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
        media: dict[str, Any] = {}
        if data["metrics"]:
            columns, rows = results_table(data["metrics"])
            media["results"] = wandb.Table(columns=columns, data=rows)
        for path in sorted(output_dir.glob("*.csv")):
            columns, rows = _csv_table(path)
            media[f"tables/{path.stem}"] = wandb.Table(columns=columns, data=rows)
        for path in sorted(output_dir.glob("*.png")):
            media[f"images/{path.stem}"] = wandb.Image(str(path), caption=path.name)
        if media:
            run.log(media)
        log.info("wandb: %d tables and images logged to %s", len(media), run.dir)
    except Exception:
        log.exception("wandb: logging the run's results failed")
    finally:
        run.finish()
