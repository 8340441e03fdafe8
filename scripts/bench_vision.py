"""Training step time of ``vit_cifar``'s ViT-Small: dense, plain and sine low rank, fp32 and bf16.

One AdamW step on a batch of 32×32 images (random pixels, so no data is needed), of the network
``python run.py task=vit_cifar preset=paper`` trains: the task config is composed and its own
``build_model`` builds it. Each configuration is timed in the same process, one after the other.

    python -m scripts.bench_vision [--batch 64] [--reps 5] [--ranks 1 10 60]

The last line printed is one JSON object: images/s per configuration and the sine/dense and
plain/dense time ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from scripts.bench_layers import adam_step, compare_methods
from sinelr.run_config import lowrank_config
from sinelr.task import Task

ROOT = Path(__file__).resolve().parents[1]


def build(task_name: str, method: str, rank: int | None) -> tuple[Task, torch.nn.Module]:
    """The task's network as ``run.py task=<task_name> preset=paper rank=.. omega=..`` builds it."""
    omega = "paper" if method == "sine_lowrank" else "null"
    overrides = [f"task={task_name}", "preset=paper", f"rank={rank or 'null'}", f"omega={omega}"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    task: Task = instantiate(cfg.task, _recursive_=False, _convert_="all")
    torch.manual_seed(0)
    return task, task.build_model(lowrank_config(cfg, task.name))


def vision_step(model: torch.nn.Module, batch: int, img_size: int, classes: int, bf16: bool):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, img_size, img_size, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    model.train()

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(images).float(), labels)

    return adam_step(model.parameters(), loss, bf16, lr=1e-3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="vit_cifar")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 10, 60])
    args = parser.parse_args()

    def make_step(method: str, rank: int | None, bf16: bool):
        task, model = build(args.task, method, rank)
        return vision_step(model, args.batch, task.img_size, task.num_classes, bf16)

    summary = compare_methods(make_step, args.ranks, args.batch, "images", args.reps)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
