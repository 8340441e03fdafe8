"""How a task is built from its config (docs/development.md, "From a config to a task").

A task class is a dataclass whose fields are its config's keys: Hydra's ``instantiate`` passes
them as keyword arguments, and the data module gets the settings it reads whole (the task
inherits them) rather than one argument per key. The keys are the command line's contract and
part of a run's fingerprint, so the test holds the two sides together.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class

from sinelr.plan import build_task
from sinelr.task import RunContext
from tasks.nerf.data import LLFFData
from tests.helpers import compose_config

TASKS = sorted(path.stem for path in (Path(__file__).parents[1] / "conf" / "task").glob("*.yaml"))


@pytest.mark.parametrize("name", TASKS)
def test_a_task_takes_exactly_its_configs_keys(name):
    config = compose_config(f"task={name}").task
    parameters = inspect.signature(get_class(config._target_)).parameters
    assert set(parameters) == set(config) - {"_target_"}
    # Keyword-only: Hydra passes the keys by name, and no key can shift into another's place.
    assert {p.kind for p in parameters.values()} == {inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize(
    ("task", "override", "message"),
    [
        ("nerf", "task.render_factor=0", r"^task\.render_factor must be >= 1, got 0$"),
        ("bof", "task.resolution=4", r"^task\.resolution must be at least 8, got 4$"),
        ("vit_cifar", "task.in_chans=2", r"^task\.in_chans must be 1 or 3, got 2$"),
        ("vit_cifar", "+task.augment.blur=1", r"^task\.augment has unknown keys \['blur'\]"),
        ("glue", "task.protocol=best", r"^task\.protocol='best': choose one of dev, sora$"),
        ("commonsense", "task.eval_sets=[quiz]", r"^task\.eval_sets: unknown \['quiz'\]"),
    ],
)
def test_a_data_setting_is_refused_when_the_task_is_built(task, override, message):
    """The data settings are checked with the task, before a trainer or any data exists."""
    with pytest.raises(ValueError, match=message):
        build_task(compose_config(f"task={task}", override))


def test_the_data_module_reads_the_tasks_own_settings(tmp_path):
    task = build_task(compose_config("task=nerf", "task.val_views=3"))
    assert isinstance(task, LLFFData)
    ctx = RunContext(tmp_path, tmp_path, tmp_path, seed=0, make_trainer=lambda **_: None)
    data = task.datamodule(ctx)
    assert data.settings is task and data.settings.val_views == 3
