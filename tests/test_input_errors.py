"""Input errors are known by their type: what run.py prints as one line (``is_input_error``).

Each case is a mistake a person makes on the command line or in their data, raised where the
project notices it (the layer config, the registry, a task, a data file, a checkpoint), and
must reach run.py as :class:`~sinelr.errors.InputError` or a missing file. What only a process
shows (the printed line, the exit status) is test_cli.py's and test_output.py's part.
"""

from __future__ import annotations

import re
import statistics

import pytest
import trimesh

from run import is_input_error
from sinelr.errors import InputError
from tests.helpers import dry_run, run_in_process

BOF = ("task=bof", "preset=smoke")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ((*BOF, "rank=0"), "rank must be a positive integer"),
        ((*BOF, "rank=1", "omega=fast"), "omega must be a number, null or 'paper'"),
        ((*BOF, "rank=7", "omega=paper"), "it has ranks 1, 2, 5, 20"),
        ((*BOF, "rank=1", "task.targets=[fc9]"), "'fc9' matches no layer"),
        ((*BOF, "rank=1", "task.lr=abc"), "task.lr must be a finite number above 0"),
        ((*BOF, "rank=1", "task.resolution=4"), "task.resolution must be at least 8"),
        ((*BOF, "rank=1", "lowrank.dropout=2"), "dropout must be a number in [0, 1)"),
        ((*BOF, "rank=1", "lowrank.variant=lora"), "lowrank.variant must be a plain from-scratch"),
        ((*BOF, "rank=1", "adapter=lora"), "adapter=lora: task bof trains its network from"),
        (("task=theory", "rank=1", "omega=auto"), "omega=auto chooses ω for the layers"),
        (("task=glue", "rank=1", "task.protocol=bad"), "task.protocol='bad': choose one of"),
    ],
)
def test_a_bad_setting_is_an_input_error_of_one_line(tmp_path, overrides, message):
    with pytest.raises(InputError, match=re.escape(message)) as raised:
        dry_run(tmp_path, *overrides)
    assert is_input_error(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [("ckpt_path=/no/such.ckpt", "does not exist"), ("resume=true", "no checkpoint of a run")],
)
def test_a_checkpoint_that_cannot_resume_the_run_is_an_input_error(tmp_path, override, message):
    with pytest.raises(InputError, match=message) as raised:
        run_in_process(tmp_path, *BOF, "rank=1", override)
    assert is_input_error(raised.value)


def test_bad_data_is_an_input_error_and_missing_data_a_missing_file(tmp_path):
    broken = tmp_path / "broken.ply"
    data = trimesh.creation.icosphere().export(file_type="ply")
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="could not read mesh") as raised:
        run_in_process(tmp_path / "run", *BOF, "rank=1", f"task.shape={broken}")
    assert is_input_error(raised.value)
    with pytest.raises(FileNotFoundError) as missing:
        run_in_process(tmp_path / "other", *BOF, "rank=1", "task.shape=bunny")
    assert is_input_error(missing.value)


def test_a_value_error_that_is_not_ours_keeps_its_traceback():
    """The type decides, not where it was raised: a ValueError of a library (or one of ours
    that is not about the input) is more likely a bug."""
    with pytest.raises(ValueError) as raised:
        statistics.mean([])
    assert not is_input_error(raised.value)
    assert not is_input_error(ValueError("raised by sinelr, but not as an input error"))
