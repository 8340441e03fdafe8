"""Experiment loggers that never cost a run: wandb goes offline instead of waiting for a network.

Publishing a finished run to W&B lives with the report's W&B upload, in
``sinelr.report.publish``.
"""

from __future__ import annotations

import logging
import netrc
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers.logger import Logger

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
