"""sinelr's command line: ``python run.py task=<name> rank=<k> omega=<ω|paper|null> ...``.

See README.md for the keys; ``python run.py --help`` lists the config groups.
"""

import logging
import os
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

# Errors that mean "fix your input": reported as one line, not a traceback. Set
# HYDRA_FULL_ERROR=1 for the traceback anyway.
INPUT_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


class RunFailed(Exception):
    """The run failed for the reason in its message; results.json has the details."""


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from sinelr.driver import run

    # Hydra's handlers already print and file every record; Lightning's own would repeat them.
    logging.getLogger("lightning.pytorch").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    try:
        result = run(cfg, HydraConfig.get().runtime.output_dir)
    except INPUT_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise RunFailed(f"{type(error).__name__}: {error}") from None
    return result.metric.value


if __name__ == "__main__":
    main()
