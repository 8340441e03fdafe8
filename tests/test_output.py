"""What a person reads: Lightning's lines once, input errors as one line, whole method names in
tables, figures beside a scaled table on its scale, checkpoint intervals, ranks that factorise."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from torch import nn

from run import is_input_error, route_lightning_logs
from scripts.report import main as report_main
from sinelr.apply import apply_lowrank
from sinelr.layers import LowRankConfig
from sinelr.plan import checkpoint_intervals
from sinelr.report import print_table, summarise
from sinelr.run_config import resolve_number
from tests.helpers import run_in_process
from tests.test_report import result

ROOT = Path(__file__).resolve().parents[1]


# --- Lightning's log lines ---------------------------------------------------------------------


def test_each_lightning_line_reaches_the_handlers_once(caplog):
    import lightning  # noqa: F401  (gives the "lightning" logger a console handler of its own)

    route_lightning_logs()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    chain, node = [], logger
    while node is not None and node is not logging.root:
        chain.append(node)
        node = node.parent if node.propagate else None
    assert node is logging.root, "a Lightning logger stops propagating before Hydra's handlers"
    assert [(n.name, h) for n in chain for h in n.handlers] == []
    with caplog.at_level(logging.INFO):
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records].count("GPU available: False, used: False") == 1


# --- input errors --------------------------------------------------------------------------------


def raised(function, *args) -> BaseException:
    try:
        function(*args)
    except Exception as error:
        return error
    raise AssertionError(f"{function.__name__}{args} raised nothing")


def test_only_errors_the_project_raises_about_its_input_are_one_line():
    assert is_input_error(raised(resolve_number, "fast"))  # sinelr's own check of a value
    assert is_input_error(raised(open, "/no/such/file"))  # a missing file, wherever it is noticed
    # The same type from inside a library is more likely a bug: it keeps its traceback.
    assert not is_input_error(raised(statistics.mean, []))
    assert not is_input_error(raised(lambda: [][0]))


@pytest.mark.slow
def test_a_run_without_its_data_prints_one_line_and_no_traceback(tmp_path):
    command = [sys.executable, str(ROOT / "run.py"), "task=nerf", "rank=5", "omega=800",
               f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    env = {**os.environ, "SINELR_DATA": str(tmp_path / "empty")}
    env.pop("HYDRA_FULL_ERROR", None)
    short = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert short.returncode == 2, short.stdout + short.stderr
    assert "Traceback" not in short.stdout + short.stderr
    (line,) = short.stderr.strip().splitlines()
    assert line.startswith("error: LLFF scene 'fern' not found at ")
    full = subprocess.run(
        command, capture_output=True, text=True, env={**env, "HYDRA_FULL_ERROR": "1"}, cwd=ROOT
    )
    assert full.returncode != 0 and "Traceback" in full.stderr


# --- terminal tables -----------------------------------------------------------------------------

TABLE = (
    [result("dense", None, 0.97, seed=s) for s in (0, 1)]
    + [result("lowrank", k, 0.7 + k / 100, seed=s) for k in (1, 2, 5) for s in (0, 1)]
    + [result("sine_lowrank", k, 0.8 + (k + s) / 100, seed=s, omega=200.0)
       for k in (1, 2, 5) for s in (0, 1)]
)  # fmt: skip


@pytest.mark.parametrize("width", [30, 60, 80, 120])
def test_a_table_cuts_no_method_name_or_number_at_any_width(width):
    out = io.StringIO()
    print_table(summarise(TABLE), 100, console=Console(width=width, file=out, color_system=None))
    text = out.getvalue()
    assert "…" not in text
    for method in ("dense", "lowrank", "sine_lowrank"):
        assert re.search(rf"[┃│ ]{method} ", text), f"{method} is cut at width {width}:\n{text}"
    for number in ("97.00", "81.50", "0.71", "+10.50"):
        assert number in text, f"{number} is cut at width {width}:\n{text}"


def test_a_table_fits_a_terminal_its_words_fit():
    out = io.StringIO()
    print_table(summarise(TABLE), 100, console=Console(width=80, file=out, color_system=None))
    assert max(len(line) for line in out.getvalue().splitlines()) <= 80


# --- figures beside a scaled table ---------------------------------------------------------------


def bd_line(capsys, sweep: Path, *scale: str) -> tuple[float, float]:
    assert report_main([str(sweep), "--markdown", *scale]) == 0
    (line,) = [s for s in capsys.readouterr().out.splitlines() if "BD-rate" in s]
    bd, rate = re.search(r"BD-test/iou(?: ×100)? (\S+), BD-rate (\S+) %", line).groups()
    return float(bd), float(rate)


def test_the_bd_line_is_on_the_scale_of_its_table(tmp_path, capsys):
    # Sine 0.015 above plain on a line in log-parameters (as test_report's BD test): BD 0.015.
    for i, k in enumerate((1, 10, 100)):
        plain = 0.1 + 0.04 * math.log10(k)
        for j, run in enumerate(
            [result("lowrank", k, plain), result("sine_lowrank", k, plain + 0.015, omega=30.0)]
        ):
            (tmp_path / f"{i}{j}").mkdir()
            (tmp_path / f"{i}{j}" / "results.json").write_text(json.dumps(run))
    bd, rate = bd_line(capsys, tmp_path)
    bd_scaled, rate_scaled = bd_line(capsys, tmp_path, "--scale", "100")
    assert bd == pytest.approx(0.015, rel=1e-3)  # printed to 3 significant digits
    assert bd_scaled == pytest.approx(100 * bd, rel=1e-3)
    assert rate_scaled == rate  # a change in parameters: no metric scale applies to it


# --- checkpoint intervals ------------------------------------------------------------------------


def test_setting_one_checkpoint_interval_clears_the_other():
    base = {"every_n_epochs": 1, "every_n_train_steps": None}
    assert checkpoint_intervals(base) == base
    steps = {"every_n_epochs": 1, "every_n_train_steps": 300}  # the base's 1 epoch, 300 given
    assert checkpoint_intervals(steps, ["checkpoint.every_n_train_steps=300"]) == {
        "every_n_epochs": None, "every_n_train_steps": 300,
    }  # fmt: skip
    assert checkpoint_intervals(steps) == {"every_n_epochs": None, "every_n_train_steps": 300}
    # A preset's steps, then epochs on the command line: the epochs were set last.
    epochs = {"every_n_epochs": 2, "every_n_train_steps": 100}
    assert checkpoint_intervals(epochs, ["task=nerf", "checkpoint.every_n_epochs=2"]) == {
        "every_n_epochs": 2, "every_n_train_steps": None,
    }  # fmt: skip
    with pytest.raises(ValueError, match="both given"):
        checkpoint_intervals(
            epochs, ["checkpoint.every_n_epochs=2", "checkpoint.every_n_train_steps=100"]
        )


# --- ranks that factorise nothing ----------------------------------------------------------------


def two_layers() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))  # min(d_in, d_out) 6, 4


@pytest.mark.parametrize("variant", ["sine_lowrank", "lora"])
def test_a_rank_that_leaves_every_layer_dense_is_an_error_naming_the_largest(variant):
    model = two_layers()
    omega = 100.0 if variant.startswith("sine") else None
    with pytest.raises(ValueError, match="rank=6 factorises nothing") as error:
        apply_lowrank(model, ["0", "2"], LowRankConfig(variant, rank=6, omega=omega))
    assert "the largest rank that factorises one is 5" in str(error.value)
    assert "rank=null is the dense baseline" in str(error.value)
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in model)  # nothing was replaced
    report = apply_lowrank(model, ["0", "2"], LowRankConfig(variant, rank=5, omega=omega))
    assert list(report.replaced) == ["0"] and list(report.kept_dense) == ["2"]


def test_layers_no_rank_can_factorise_say_so():
    model = nn.Sequential(nn.Linear(8, 1))
    with pytest.raises(ValueError, match="no rank factorises a layer of width 1"):
        apply_lowrank(model, ["0"], LowRankConfig("lowrank", rank=1))


def test_a_task_refusing_its_settings_is_one_line_not_hydras_wrapper(tmp_path):
    """A Task's own check (here GLUE's protocol) reaches run.py as the task raised it, not as
    Hydra's instantiation error, so run.py prints its one line."""
    with pytest.raises(ValueError, match=r"task.protocol='bad': choose one of") as raised:
        run_in_process(tmp_path, "task=glue", "task.protocol=bad", "rank=1", "dry_run=true")
    assert is_input_error(raised.value)
