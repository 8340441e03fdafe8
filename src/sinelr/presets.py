"""What a run's preset means for its task: that the pair exists, and where it can run.

``preset=<p>`` selects ``conf/task_preset/<task>_<p>.yaml`` through config.yaml's ``optional``
default, and Hydra skips an optional config that is not there without a word: the task's
defaults would run under the preset's name (for ``task=commonsense``, ``preset=mini`` would
train LLaMA-3-8B in float32 and label it a mini). :func:`check_task_preset` refuses such a run,
naming the presets the task has. :func:`paper_on_cpu_warning` is the note a ``preset=paper``
run on the CPU prints before anything else: the paper's schedules were run on GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType

TASK_PRESET_GROUP = "task_preset"


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
    raise ValueError(
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
