"""What a run's preset means for its task: that the pair exists, and where it can run.

``preset=<p>`` selects ``conf/task_preset/<task>_<p>.yaml`` through config.yaml's ``optional``
default, and Hydra skips an optional config that is not there without a word: the task's
defaults would run under the preset's name (for ``task=commonsense``, ``preset=mini`` would
train LLaMA-3-8B in float32 and label it a mini). :func:`check_task_preset` refuses such a run,
naming the presets the task has. :func:`paper_on_cpu_warning` is the note a ``preset=paper``
run on the CPU prints before anything else: the paper's schedules were run on GPUs.
:func:`fast_precision` is the precision the CPU presets train in: bf16 autocast only where the
machine computes bf16 natively.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType

from sinelr.errors import InputError

log = logging.getLogger(__name__)

TASK_PRESET_GROUP = "task_preset"
#: The CPU features, as ``torch.cpu.get_capabilities()`` names them, that compute bf16 products
#: in hardware: x86's AMX and AVX-512 BF16, Arm's BF16 and SVE BF16.
NATIVE_BF16 = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16")


def check_task_preset(choices: Mapping[str, str | None], available: Iterable[str]) -> None:
    """A ValueError naming the task's presets if its ``task_preset`` config is not among
    ``available`` (the group's config names); nothing if it is, or if none was asked for
    (``~task_preset`` on the command line)."""
    wanted = choices.get(TASK_PRESET_GROUP)
    available = set(available)
    if wanted is None or wanted in available:
        return
    task, preset = choices.get("task"), choices.get("preset")
    prefix = f"{task}_"
    presets = sorted(name.removeprefix(prefix) for name in available if name.startswith(prefix))
    has = f"its presets are: {', '.join(presets)}" if presets else "it has none"
    raise InputError(
        f"task={task} has no preset={preset} (no conf/{TASK_PRESET_GROUP}/{wanted}.yaml); {has}"
    )


def check_composed_task_preset() -> None:
    """:func:`check_task_preset` for the run Hydra composed; nothing outside Hydra (a config
    composed by hand and given to ``driver.run``), where there is no search path to look in."""
    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        return
    loader = GlobalHydra.instance().config_loader()
    available = loader.get_group_options(TASK_PRESET_GROUP, results_filter=ObjectType.CONFIG)
    check_task_preset(HydraConfig.get().runtime.choices, available)


def paper_on_cpu_warning(preset: str, device: str, trains: bool) -> str | None:
    """The warning for a ``preset=paper`` run that trains on the CPU; None for any other run
    (``trains`` is false for ``theory``, which trains nothing, and for a dry run).

    Not an error: the run is the paper's and may be wanted (a long CPU job, a check that it
    starts), but without the note a user who forgot ``trainer=gpu`` waits days to find out.
    """
    if preset != "paper" or device != "cpu" or not trains:
        return None
    return (
        "preset=paper on the CPU: the paper's schedules take days on a CPU, where they ran on "
        "GPUs. Add trainer=gpu (trainer=ddp or trainer=fsdp for several GPUs) on a machine with "
        "one; preset=mini and preset=smoke are the short runs."
    )


def native_bf16(capabilities: Mapping[str, Any]) -> bool:
    """Whether a CPU with these capabilities computes bf16 products in hardware."""
    return any(capabilities.get(flag) for flag in NATIVE_BF16)


def fast_precision(accelerator: str) -> str:
    """``${fast_precision:${trainer.accelerator}}``, the presets' training precision:
    ``bf16-mixed`` on a GPU and on a CPU that computes bf16 natively, ``32-true`` on a CPU that
    only emulates it.

    The minis were sized on a CPU with AMX, where bf16 autocast trains the sine networks about
    ten times faster than float32; on a CPU with AVX2 only, the same autocast is 4 to 40 times
    *slower* (benchmarks/RESULTS.md §3), and a mini of minutes would take hours. The choice is
    made per machine, so the same command may train in another precision elsewhere: results.json
    records the one used (``fingerprint.trainer.precision``), and ``trainer.precision=`` on the
    command line still decides. A torch too old to report its CPU's features keeps bf16-mixed.
    """
    import torch  # here, not at the top: run.py registers this resolver before importing torch

    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if not on_cpu:
        return "bf16-mixed"
    capabilities = getattr(torch.cpu, "get_capabilities", lambda: None)()
    if capabilities is not None and not native_bf16(capabilities):
        _say_float32()
        return "32-true"
    return "bf16-mixed"


@functools.cache
def _say_float32() -> None:
    log.info(
        "this CPU has no native bf16 (AMX, AVX-512 BF16, Arm BF16): the preset trains in "
        "float32 (32-true), as bf16 autocast would be several times slower here; "
        "trainer.precision=bf16-mixed forces it"
    )
