"""Experiment loggers that never cost a run: wandb goes offline instead of waiting for a network."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

log = logging.getLogger(__name__)

WANDB_HOST = ("api.wandb.ai", 443)


def network_reachable(address: tuple[str, int] = WANDB_HOST, timeout_s: float = 2.0) -> bool:
    """True if a TCP connection to ``address`` opens within ``timeout_s`` (DNS included)."""
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return True
    except OSError:
        return False


def wandb_logger(offline: bool | None = None, **kwargs: Any):
    """A ``WandbLogger`` that is offline when wandb's server cannot be reached.

    ``offline=None`` decides by a 2-second connection test (skipped when ``WANDB_MODE`` is
    set). wandb's own start-up otherwise retries for minutes on a closed network.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        mode = os.environ.get("WANDB_MODE")
        offline = mode in ("offline", "disabled") if mode else not network_reachable()
        if offline and not mode:
            log.warning("wandb: %s:%d unreachable, logging offline", *WANDB_HOST)
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(offline=offline, **kwargs)
