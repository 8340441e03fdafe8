"""Experiment loggers that never cost a run: wandb goes offline instead of waiting for a network.

Publishing a finished run to W&B lives with the report's W&B upload, in
``sinelr.report.publish``.
"""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hydra.utils import instantiate
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import Logger

from sinelr.io import atomic_write

if TYPE_CHECKING:
    from lightning.pytorch.loggers import WandbLogger

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


def wandb_logger(offline: bool | None = None, **kwargs: Any) -> WandbLogger:
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


class _ContinuingWriter(ExperimentWriter):
    """A metrics.csv writer that starts from the rows of the run it resumes.

    Lightning's writer deletes the metrics.csv it finds, so a run resumed after a kill kept
    only the steps after its checkpoint. This one writes the earlier log's rows (from the
    earlier run's directory, which ``resume=true`` may have left for a new one) into its own
    file at once and atomically, so a kill at any point leaves a whole log. At its first save
    it drops the rows at or after the first step it logs, which the resumed run logs again.
    """

    def __init__(self, log_dir: str, earlier: Path) -> None:
        super().__init__(log_dir)
        self._earlier = _read_rows(earlier)
        if self._earlier:
            self._write(self._earlier)

    def _check_log_dir_exists(self) -> None:
        """Not Lightning's deletion: the file may be the very log this run continues."""

    def _write(self, rows: list[dict[str, str]]) -> None:
        self.metrics_keys = sorted(set().union(*rows))

        def write(handle: IO[bytes]) -> None:
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
            handle.write(text.getvalue().encode())

        atomic_write(self.metrics_file_path, write)

    def save(self) -> None:
        if self._earlier and self.metrics:
            first = min(int(row["step"]) for row in self.metrics)
            self._write([row for row in self._earlier if int(row["step"]) < first])
            self._earlier = []
        super().save()


def _read_rows(path: Path) -> list[dict[str, str]]:
    """A metrics.csv's rows; a last row cut short by a kill (no whole step) is left out."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [row for row in rows if (row.get("step") or "").isdigit()]


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, whose metrics.csv a resumed run continues.

    The driver passes ``resume_from``, the checkpoint the run continues from (``resume=true``
    or ``ckpt_path=``); the earlier log is at the same place relative to that checkpoint's run
    directory as this log is to this run's. A fresh run still starts a new file. (Lightning
    writes the file after every logged row, so the log on disk is as recent as the run.)
    """

    def __init__(self, *args: Any, resume_from: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_from = resume_from

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._resume_from:
            earlier_run = Path(self._resume_from).parents[1]  # <run>/checkpoints/last.ckpt
            relative = Path(self.log_dir).relative_to(self.save_dir)
            earlier = earlier_run / relative / ExperimentWriter.NAME_METRICS_FILE
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, earlier)
        return super().experiment


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
    """The configured loggers, each guarded; a config's null keys that ``labels`` has get its.

    The run's labels (W&B ``group`` = the experiment, ``tags`` = task, method, rank, preset;
    ``resume_from`` for the CSV log) are known only once the driver has read the command line, so
    the logger configs leave them null and the driver fills them in.
    """
    loggers = []
    for config in (configs or {}).values():
        if config:
            extra = {k: v for k, v in labels.items() if k in config and config[k] is None}
            loggers.append(GuardedLogger(instantiate(config, **extra)))
    return loggers
