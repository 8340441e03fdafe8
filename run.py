"""sinelr's command line: ``python run.py task=<name> rank=<k> omega=<ω|paper|null> ...``.

See README.md for the keys; ``python run.py --help`` lists the config groups.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sinelr.errors import InputError

if TYPE_CHECKING:
    from sinelr.results import RunResult

#: Exit status of a run stopped by its input, as argparse uses for a bad command line.
INPUT_ERROR_EXIT = 2


class RunFailed(CompactHydraException):
    """A multirun job stopped by its input; Hydra prints the message alone, no traceback."""


def is_input_error(error: BaseException) -> bool:
    """Whether ``error`` reports bad input, which run.py prints as one line, not a traceback
    (HYDRA_FULL_ERROR=1 shows the traceback anyway): one the project raised as such
    (:class:`~sinelr.errors.InputError`), or a missing file, wherever it was noticed. Any other
    error, a ValueError from inside a library included, is more likely a bug and keeps its
    traceback.
    """
    return isinstance(error, InputError | FileNotFoundError)


def _not_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def route_lightning_logs() -> None:
    """Send Lightning's records through Hydra's handlers only, once each.

    ``import lightning`` gives the ``lightning`` logger a console handler of its own, and its
    records also propagate to the root logger that Hydra's job_logging configures (console and
    the run's log file): every Lightning line printed twice. Lightning is imported after Hydra
    set logging up, so this cannot be done in job_logging. Also drops Lightning's tip to
    install litlogger.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_litlogger_tip)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from sinelr.driver import run

    route_lightning_logs()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    hydra_cfg = HydraConfig.get()
    try:
        result = run(cfg, hydra_cfg.runtime.output_dir)
        return search_value(result, OmegaConf.select(hydra_cfg, "sweeper.direction"))
    except Exception as error:
        if not is_input_error(error) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweeper lists each failed job at the end
            raise RunFailed(f"{type(error).__name__}: {error}") from None
        print(f"error: {error}", file=sys.stderr)
        sys.exit(INPUT_ERROR_EXIT)


def search_value(result: RunResult, direction: str | None = None) -> float | None:
    """What a sweeper optimising the job's return value (``hparams_search=omega_optuna``) reads:
    results.json's ``selection``, the validation metric, never the test metric reported beside
    it; None for a run without one (a dry run, or a result written before selections were
    recorded, which a search must not read the test metric of).

    ``direction`` (the sweeper's ``maximize``/``minimize``, where it has one) must agree with
    the selection's: commonsense selects on ``val/loss``, and maximising it would search for the
    worst setting.
    """
    if result.selection is None:
        return None
    wanted = "maximize" if result.selection.higher_is_better else "minimize"
    if direction is not None and direction != wanted:
        raise InputError(
            f"hydra.sweeper.direction={direction}, but {result.selection.name} (results.json's "
            f"selection) wants {wanted}: add hydra.sweeper.direction={wanted}"
        )
    return result.selection.value


if __name__ == "__main__":
    from sinelr.resolvers import register_resolvers

    register_resolvers()  # before Hydra resolves anything: --cfg job --resolve, too
    main()
