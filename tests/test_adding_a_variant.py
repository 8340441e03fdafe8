"""docs/method.md's "Adding a variant", run as written: its file, imported, registers a plain
variant and its sine twin, which the command line names and which build and train; a twin that
forgets what its plain variant needs cannot register."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from sinelr.apply import apply_lowrank
from sinelr.layers import (
    LOWRANK_LAYERS,
    LoRALinear,
    LowRankConfig,
    method_names,
    plain_variants,
    unregister_lowrank,
    variant_name,
)
from sinelr.layers.sine import SINE_SETTINGS
from tests.helpers import dry_run

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("lorafa", "sine_lorafa")


def example() -> str:
    """The Python block of docs/method.md's "Adding a variant" section."""
    text = (ROOT / "docs" / "method.md").read_text("utf-8")
    section = text.split("\n## Adding a variant\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return block


def import_file(path: Path, source: str) -> ModuleType:
    """``source`` written to ``path`` and imported from there, as a user's own module is."""
    path.write_text(source, "utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lorafa(tmp_path) -> Iterator[ModuleType]:
    """The example imported, its two variants removed again afterwards (the twin first)."""
    try:
        yield import_file(tmp_path / "lorafa.py", example())
    finally:
        for name in reversed(NAMES):
            if name in LOWRANK_LAYERS:
                unregister_lowrank(name)


def test_the_file_registers_a_variant_and_its_twin(lorafa):
    plain, twin = lorafa.LoRAFALinear, lorafa.SineLoRAFALinear
    assert (LOWRANK_LAYERS["lorafa"], LOWRANK_LAYERS["sine_lorafa"]) == (plain, twin)
    assert "lorafa" in plain_variants("adapter")
    assert method_names()[-2:] == list(NAMES)
    assert variant_name(8, None, adapter="lorafa") == "lorafa"
    assert variant_name(8, 200.0, adapter="lorafa") == "sine_lorafa"
    assert (twin.kind, twin.sine_of, twin.peft_method) == ("adapter", "lorafa", None)
    assert twin.hyperparameters == plain.hyperparameters | SINE_SETTINGS
    assert plain.hyperparameters == LoRALinear.hyperparameters
    # What LoRA computes is not LoRA-FA's: neither its PEFT export nor its ω rule comes along.
    assert (plain.peft_method, plain.peft_adapter, plain.omega_auto) == (None, None, False)
    assert twin.omega_auto is False


@pytest.mark.parametrize("variant", NAMES)
def test_each_builds_and_trains_a_step_with_a_frozen(lorafa, variant):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).requires_grad_(False)
    omega = 30.0 if variant == "sine_lorafa" else None
    report = apply_lowrank(model, ["0", "2"], LowRankConfig(variant, 2, omega=omega, alpha=4.0))
    assert report.replaced == {"0": variant, "2": variant}
    layer = model[0]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained == [model[0].lora_B, model[2].lora_B]  # A frozen, B alone trains
    A, B = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    optimiser = torch.optim.SGD(trained, lr=0.1)
    x, target = torch.randn(8, 12), torch.randn(8, 4)
    loss = nn.functional.mse_loss(model(x), target)
    loss.backward()
    optimiser.step()
    assert layer.lora_A.equal(A) and not layer.lora_B.equal(B)
    assert nn.functional.mse_loss(model(x), target) < loss


def test_the_command_line_names_both(lorafa, tmp_path):
    command = ["task=glue", "task.name=rte", "adapter=lorafa", "rank=8"]
    plain = dry_run(tmp_path / "plain", *command)
    assert plain["method"] == "lorafa"
    assert plain["params"]["trainable"] < plain["params"]["lowrank"]  # A is frozen
    assert dry_run(tmp_path / "sine", *command, "omega=200")["method"] == "sine_lorafa"


GAIN = "    gain_rule = GainRule.FAN_IN  # the sine is added to W0\n"
#: Edits of the example's twin, and why registration refuses each.
FORGETFUL = {
    "no-gain": (GAIN, "", "a sine twin declares its default gain on the class itself"),
    # Built on the from-scratch twin's constructor, which takes none of LoRA's settings.
    "another-constructor": (
        "(SineLoRALinear, LoRAFALinear)",
        "(SineLowRankLinear)",
        "its constructor takes no alpha, dropout, which the variant reads",
    ),
    "restated-settings": (
        GAIN,
        GAIN + '    hyperparameters = frozenset({"alpha", "dropout", "omega"})\n',
        "it declares hyperparameters, which a sine twin takes from lorafa",
    ),
}


@pytest.mark.parametrize(("old", "new", "message"), FORGETFUL.values(), ids=FORGETFUL.keys())
def test_a_twin_that_forgets_what_its_plain_variant_needs_cannot_register(
    tmp_path, old, new, message
):
    source = example()
    assert old in source
    source = source.replace(old, new).replace("GainRule,", "GainRule, SineLowRankLinear,")
    refused = re.escape(f"cannot register SineLoRAFALinear as 'sine_lorafa': {message}")
    try:
        with pytest.raises(ValueError, match=f"^{refused}"):
            import_file(tmp_path / "forgetful.py", source)
        assert "lorafa" in LOWRANK_LAYERS and "sine_lorafa" not in LOWRANK_LAYERS
    finally:
        unregister_lowrank("lorafa")
