"""The paper's frequencies per task and rank (docs/method.md, "Settings per task").

One table, read by ``omega=paper`` and by the ``theory`` task, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinelr.errors import InputError


@dataclass(frozen=True)
class PaperSetting:
    """Where the paper factorises and with which ω at each rank.

    ``layer_shape`` is ``(d_out, d_in)`` of a typical factorised layer, for the theory task.
    """

    omega: dict[int, float]
    layer_shape: tuple[int, int]


PAPER: dict[str, PaperSetting] = {
    "bof": PaperSetting({1: 200, 2: 100, 5: 50, 20: 20}, (256, 256)),
    "nerf": PaperSetting({1: 1400, 5: 800, 10: 600, 30: 400, 60: 300}, (256, 256)),
    "vit_cifar": PaperSetting({1: 500, 5: 500, 10: 300, 30: 300, 60: 300}, (1536, 384)),
    "vit_imagenet": PaperSetting(
        {1: 1000, 5: 800, 10: 800, 30: 400, 60: 200, 100: 200, 150: 150, 250: 150}, (3072, 768)
    ),
    "convnext_cifar": PaperSetting({1: 400, 5: 300, 20: 300}, (3072, 768)),
    "glue": PaperSetting({1: 200, 2: 200, 4: 200, 8: 200}, (768, 768)),
    "commonsense/lora": PaperSetting({4: 800, 8: 600, 16: 200, 32: 200}, (4096, 4096)),
    "commonsense/dora": PaperSetting({8: 300, 16: 150, 32: 100}, (4096, 4096)),
}


def paper_key(task: str, adapter: str | None = None) -> str:
    """Tasks whose ω depends on the adapter are keyed ``task/adapter``."""
    keyed = f"{task}/{adapter or 'lora'}"
    return keyed if keyed in PAPER else task


def paper_omega(task: str, rank: int | None, adapter: str | None = None) -> float:
    """The paper's ω for ``task`` at ``rank``; an error that lists the ranks it has otherwise."""
    key = paper_key(task, adapter)
    if key not in PAPER:
        raise InputError(
            f"omega=paper: the paper gives no frequency for task {task!r}; "
            f"tasks with paper frequencies: {', '.join(sorted(PAPER))}. Pass omega=<number>."
        )
    table = PAPER[key].omega
    if rank not in table:
        ranks = ", ".join(str(r) for r in sorted(table))
        raise InputError(
            f"omega=paper: the paper has no ω for {key} at rank={rank}; it has ranks {ranks}. "
            "Pick one of those ranks or pass omega=<number>."
        )
    return float(table[rank])
