"""sinelr's command line: ``python run.py task=<name> rank=<k> omega=<ω|paper|null> ...``.

See CONTRACT.md for every key; ``python run.py --help`` lists the config groups.
"""

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from sinelr.driver import run

    # Hydra's handlers already print and file every record; Lightning's own would repeat them.
    logging.getLogger("lightning.pytorch").handlers.clear()
    result = run(cfg, HydraConfig.get().runtime.output_dir)
    return result.metric.value


if __name__ == "__main__":
    main()
