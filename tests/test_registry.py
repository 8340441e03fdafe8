"""The registry is the one source of truth: a variant registered in-process is built, counted,
reported, exported and named on the command line with no other edit; its declarations are
checked when it registers; a setting it does not read is an error."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from sinelr.accounting import count_parameters
from sinelr.apply import apply_lowrank, densify
from sinelr.export import peft_variants, save_peft
from sinelr.layers import (
    LOWRANK_LAYERS,
    DoRALinear,
    GainRule,
    LoRALinear,
    LowRankConfig,
    LowRankLayer,
    LowRankLinear,
    SineDoRALinear,
    SineLoRALinear,
    SineLowRankLinear,
    get_lowrank_class,
    method_names,
    plain_variants,
    register_lowrank,
    unregister_lowrank,
    variant_name,
)
from sinelr.report import layout, markdown, summarise
from sinelr.report.model import METHOD_ORDER
from sinelr.report.publish import summary_rows
from sinelr.run_config import lowrank_config
from tests.helpers import compose_config, dry_run


# Two toy methods, as a user would add them: a class each and its sine twin, nothing else.
class HalfLowRank(LowRankLinear):
    """From scratch: ``W = U V / 2``."""

    materialises_weight = True

    def weight_rows(self, rows: slice, U: Tensor, V: Tensor) -> Tensor:
        return (U[rows] @ V) / 2


class SineHalfLowRank(SineLowRankLinear, HalfLowRank):
    """``W = sin(ω·U V / 2) / g``."""

    sine_of = "half_toy"
    gain_rule = GainRule.FAN_IN  # the sine is the weight

    def weight_rows(self, rows: slice, U: Tensor, V: Tensor) -> Tensor:
        return self.sine(U[rows] / 2, V)

    def weight_rows_vjp(self, rows: slice, U: Tensor, V: Tensor) -> Any:
        return HalfLowRank.weight_rows_vjp(self, rows, U, V)  # autograd over weight_rows


class FrozenALoRA(LoRALinear):
    """LoRA with ``A`` frozen at its random start (LoRA-FA): only ``B`` trains."""

    peft_method = None  # PEFT has no such method: a subclass of LoRA must say so

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lora_A.requires_grad_(False)


class SineFrozenALoRA(SineLoRALinear, FrozenALoRA):
    """``ΔW = (α/r)·sin(ω·B A)/g`` with ``A`` frozen."""

    sine_of = "lorafa_toy"
    gain_rule = GainRule.FAN_IN  # the sine is added to W0


TOYS = {
    "half_toy": HalfLowRank,
    "sine_half_toy": SineHalfLowRank,
    "lorafa_toy": FrozenALoRA,
    "sine_lorafa_toy": SineFrozenALoRA,
}


@pytest.fixture
def toys() -> Iterator[None]:
    """The toy variants registered for one test, and removed after it (twins first)."""
    try:
        for name, cls in TOYS.items():
            register_lowrank(name)(cls)
        yield
    finally:
        for name in reversed(TOYS):
            if name in LOWRANK_LAYERS:
                unregister_lowrank(name)


def test_toys_are_removed_after_each_test():
    assert not set(TOYS) & set(LOWRANK_LAYERS)
    assert not set(TOYS) & set(METHOD_ORDER)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))


@pytest.mark.usefixtures("toys")
def test_a_registered_adapter_is_built_counted_and_merged():
    model = net().requires_grad_(False)
    dense = copy.deepcopy(model)
    report = apply_lowrank(model, ["0", "2"], LowRankConfig("lorafa_toy", rank=2))
    assert report.replaced == {"0": "lorafa_toy", "2": "lorafa_toy"}
    assert all(isinstance(model[i], FrozenALoRA) for i in (0, 2))
    counts = count_parameters(model, sum(p.numel() for p in dense.parameters()))
    assert counts.lowrank == (2 * 12 + 10 * 2) + (2 * 10 + 6 * 2)  # A and B of both layers
    assert counts.trainable == 10 * 2 + 6 * 2  # B only: A is frozen
    assert counts.total == counts.full_rank_total + counts.lowrank
    for i in (0, 2):
        nn.init.normal_(model[i].lora_B)  # a trained state: B = 0 would merge to W0
    x = torch.randn(3, 12)
    with torch.no_grad():
        expected = model(x)
        assert not torch.allclose(expected, dense(x))
        assert densify(model) == ["0", "2"]
        # Float32 rounding of a few products of O(1) entries.
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    assert all(type(model[i]) is nn.Linear for i in (0, 2))


@pytest.mark.usefixtures("toys")
def test_a_variant_without_a_peft_equal_is_refused_by_peft_export(tmp_path):
    assert {"lora", "dora", "sine_lora", "sine_dora"} <= set(peft_variants())
    assert not set(TOYS) & set(peft_variants())
    for variant, omega in (("lorafa_toy", None), ("sine_lorafa_toy", 30.0)):
        config = LowRankConfig(variant, 2, omega=omega)
        with pytest.raises(
            ValueError, match=rf"^{variant} cannot be saved as PEFT.*no method.*merged checkpoint"
        ):
            save_peft(nn.Linear(4, 4), config, tmp_path)


@pytest.mark.usefixtures("toys")
def test_a_registered_variant_has_its_place_in_the_report_and_wandb():
    order = list(METHOD_ORDER)
    assert order == method_names()
    # Each kind in registration order: the toys after the built-in variants of their kind.
    assert order.index("sine_lowrank") + 1 == order.index("half_toy")
    assert order.index("half_toy") + 1 == order.index("sine_half_toy") < order.index("lora")
    assert order[-2:] == ["lorafa_toy", "sine_lorafa_toy"]

    def result(method: str, value: float, omega: float | None = None) -> dict:
        return {
            "task": "bof", "method": method, "rank": 1, "omega": omega, "seed": 0,
            "status": "completed", "params": {"total": 100},
            "metric": {"name": "test/iou", "value": value, "higher_is_better": True},
            "task_config": {"_target_": "tasks.bof.BofTask", "shape": "lucy"},
        }  # fmt: skip

    results = [
        result("sine_half_toy", 0.9, omega=200.0),
        result("half_toy", 0.5),
        result("lowrank", 0.7),
    ]
    rows = summarise(results)
    assert [row.method for row in rows] == ["lowrank", "half_toy", "sine_half_toy"]
    header, _, line = markdown(rows, scale=100).splitlines()
    assert header.split(" | ")[5:] == [
        "lowrank",
        "half_toy",
        "sine_half_toy",
        "ω",
        "sine − plain |",
    ]
    assert line.endswith("| 70.00 | 50.00 | 90.00 | 200 | +40.00 |")
    logged = {(row[4], row[9]) for row in summary_rows(layout(results))}
    assert {("half_toy", 50.0), ("sine_half_toy", 90.0)} <= logged


@pytest.mark.usefixtures("toys")
def test_the_command_line_names_registered_variants(tmp_path):
    glue = ["task=glue", "task.name=rte", "adapter=lorafa_toy", "rank=8"]
    plain = dry_run(tmp_path / "adapter", *glue)
    assert plain["method"] == "lorafa_toy" and plain["adapter"] == "lorafa_toy"
    assert plain["params"]["trainable"] < plain["params"]["lowrank"]  # A is frozen
    assert dry_run(tmp_path / "sine_adapter", *glue, "omega=200")["method"] == "sine_lorafa_toy"
    bof = ["task=bof", "preset=smoke", "rank=1", "lowrank.variant=half_toy"]
    assert dry_run(tmp_path / "scratch", *bof)["method"] == "half_toy"
    assert dry_run(tmp_path / "sine_scratch", *bof, "omega=200")["method"] == "sine_half_toy"


@pytest.mark.usefixtures("toys")
def test_variant_names_and_their_errors():
    assert plain_variants("scratch")[:2] == ["lowrank", "half_toy"]
    assert "lorafa_toy" in plain_variants("adapter")
    assert variant_name(2, None, scratch="half_toy") == "half_toy"
    assert variant_name(2, 5.0, adapter="lorafa_toy") == "sine_lorafa_toy"
    assert variant_name(None, 5.0, adapter="lorafa_toy") == "dense"
    with pytest.raises(ValueError, match=r"lowrank.variant must be .*got 'lora' \(adapters are"):
        variant_name(2, None, scratch="lora")
    with pytest.raises(ValueError, match=r"adapter must be one of lora, dora.*lorafa_toy"):
        variant_name(2, None, adapter="half_toy")
    with pytest.raises(ValueError, match="both given"):
        variant_name(2, None, adapter="lora", scratch="half_toy")
    with pytest.raises(ValueError, match="unregister 'sine_half_toy' before 'half_toy'"):
        unregister_lowrank("half_toy")
    unregister_lowrank("sine_half_toy")
    with pytest.raises(ValueError, match="no sine_half_toy is registered; pass omega=null"):
        variant_name(2, 5.0, scratch="half_toy")


class Undeclared(LowRankLayer):
    pass


class SineNamedPlain(LowRankLinear):
    pass


class InheritsPeft(LoRALinear):
    pass


class TwinOfUnregistered(SineLowRankLinear):
    sine_of = "nowhere"


class TwinOfATwin(SineLoRALinear):
    sine_of = "sine_lora"


class PlainWithOmega(LowRankLinear):
    hyperparameters = frozenset({"omega"})


class TypoSetting(LowRankLinear):
    hyperparameters = frozenset({"droput"})


class ASet(LowRankLinear):
    hyperparameters: ClassVar = {"dropout"}  # a set, not the frozenset asked for


@pytest.mark.parametrize(
    ("name", "cls", "message"),
    [
        ("undeclared", Undeclared, "does not declare kind, sine_of, peft_method, hyperparameters"),
        ("sine_plain", SineNamedPlain, "sine_of is None but must be 'plain'"),
        ("inherits", InheritsPeft, "inherits peft_method='lora'"),
        ("sine_nowhere", TwinOfUnregistered, "'nowhere' is not a registered plain variant"),
        ("sine_sine_lora", TwinOfATwin, "'sine_lora' is not a registered plain variant"),
        ("sine_lora_toy", TwinOfATwin, "sine_of is 'sine_lora' but must be 'lora_toy'"),
        ("omega_plain", PlainWithOmega, "a plain variant reads no omega"),
        ("typo", TypoSetting, "hyperparameters must be LowRankConfig fields"),
        ("a_set", ASet, "hyperparameters must be a frozenset, got {'dropout'}"),
        ("not_a_layer", nn.Linear, "a variant subclasses sinelr.layers.LowRankLayer"),
    ],
)
def test_declarations_are_checked_when_a_variant_registers(name, cls, message):
    before = dict(LOWRANK_LAYERS)
    prefix = f"^cannot register {cls.__qualname__} as '{name}': "
    with pytest.raises(ValueError, match=prefix + ".*" + re.escape(message)):
        register_lowrank(name)(cls)
    assert before == LOWRANK_LAYERS


class DoRAToy(DoRALinear):
    peft_method = None


class TwinWithoutTheNorm(SineLoRALinear):
    sine_of = "dora_toy"


class TwinOfAnotherKind(SineDoRALinear):
    sine_of = "dora_toy"
    kind = "scratch"


class TwinClaimingPeft(SineDoRALinear):
    sine_of = "dora_toy"
    peft_method = "dora"


class TwinInheritingTheGain(SineDoRALinear):
    sine_of = "dora_toy"  # all else right, but the gain rule is sine DoRA's, not its own


class TwinWithAGainNumber(SineDoRALinear):
    sine_of = "dora_toy"
    gain_rule: ClassVar = 1.0  # a number, not a rule: it would not follow the layer's shape


@pytest.mark.parametrize(
    ("twin", "message"),
    [
        (TwinWithoutTheNorm, "reads omega and every setting dora_toy reads.*lacks detach_norm"),
        (TwinOfAnotherKind, "kind 'scratch' differs from dora_toy's 'adapter'"),
        (TwinClaimingPeft, "a sine variant equals no PEFT method"),
        (TwinInheritingTheGain, "a sine twin declares its default gain on the class itself"),
        (TwinWithAGainNumber, "a sine twin declares its default gain on the class itself"),
    ],
)
def test_a_sine_twin_matches_its_plain_variant(twin, message):
    register_lowrank("dora_toy")(DoRAToy)
    try:
        with pytest.raises(ValueError, match=message):
            register_lowrank("sine_dora_toy")(twin)
        assert "sine_dora_toy" not in LOWRANK_LAYERS
    finally:
        unregister_lowrank("dora_toy")


#: Each sine twin's default gain (docs/method.md, "Gain per sine twin"): ``√d_in`` where the sine
#: is a weight or is added to one, 1 where it is HiRA's relative change. A new twin must be added
#: here, with its reason in the docs.
GAIN_RULES = {
    "sine_lowrank": GainRule.FAN_IN,
    "sine_lora": GainRule.FAN_IN,
    "sine_dora": GainRule.FAN_IN,
    "sine_pissa": GainRule.FAN_IN,
    "sine_vera": GainRule.FAN_IN,
    "sine_loraxs": GainRule.FAN_IN,
    "sine_hira": GainRule.UNIT,
}


def test_each_sine_twin_builds_the_gain_its_rule_gives_unless_one_is_given():
    twins = {name: cls for name, cls in LOWRANK_LAYERS.items() if cls.sine_of is not None}
    assert set(twins) == set(GAIN_RULES)
    expected = {GainRule.FAN_IN: 3.0, GainRule.UNIT: 1.0}  # d_in = 9: √9 or 1
    for name, cls in twins.items():
        assert vars(cls)["gain_rule"] is GAIN_RULES[name], name
        torch.manual_seed(0)
        layer = cls.from_linear(nn.Linear(9, 5), LowRankConfig(name, 2, omega=30.0))
        assert layer.gain == expected[GAIN_RULES[name]], name
        given = cls.from_linear(nn.Linear(9, 5), LowRankConfig(name, 2, omega=30.0, gain=2.5))
        assert given.gain == 2.5, name  # lowrank.gain wins over every rule


def test_the_method_doc_states_each_twins_gain_rule():
    """docs/method.md's table row per twin names the gain its class declares."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text("utf-8")
    written = {GainRule.FAN_IN: "`√d_in`", GainRule.UNIT: "`1`"}
    for name, rule in GAIN_RULES.items():
        rows = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, name
        assert rows[0].rstrip().endswith(f"| {written[rule]} |"), rows[0]


# A value other than the default for every setting, valid for every variant that reads it.
SET = {
    "gain": 2.0, "alpha": 4.0, "dropout": 0.1, "fused": False, "block_elems": 64,
    "detach_norm": True, "learn_omega": True, "omega_lr": 0.02,
}  # fmt: skip


def held(layer: nn.Module, setting: str) -> Any:
    """The value of ``setting`` a built layer applies."""
    if setting == "dropout":
        return layer.lora_dropout.p
    if setting == "learn_omega":
        return layer.log_omega is not None
    return getattr(layer, setting)


@pytest.mark.parametrize("variant", sorted(LOWRANK_LAYERS))
def test_each_variant_applies_every_setting_it_declares(variant):
    """A setting declared but not applied would be accepted and change nothing: the very thing
    the check is there to refuse. Each declared setting, away from its default, must reach the
    built layer (``from_linear`` passes the declared settings to the constructor)."""
    cls = get_lowrank_class(variant)
    settings = {k: v for k, v in SET.items() if k in cls.hyperparameters}
    omega = 30.0 if "omega" in cls.hyperparameters else None
    torch.manual_seed(0)
    layer = cls.from_linear(nn.Linear(12, 10), LowRankConfig(variant, 2, omega=omega, **settings))
    assert isinstance(layer, cls)
    assert {k: held(layer, k) for k in settings} == settings
    assert cls.hyperparameters - {"omega"} == settings.keys()  # SET covers every setting


def test_a_setting_the_variant_does_not_read_is_an_error(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"^variant lowrank does not read lowrank.dropout=0.1 \(it reads lowrank.block_elems, "
        r"lowrank.fused\): .* \(lora, dora",
    ):
        dry_run(tmp_path / "dropout", "task=bof", "preset=smoke", "rank=1", "lowrank.dropout=0.1")
    # The lowrank group's defaults are no setting: given explicitly, they are accepted.
    defaults = ["lowrank.learn_omega=false", "lowrank.dropout=0.0", "lowrank.alpha=null"]
    result = dry_run(tmp_path / "defaults", "task=bof", "preset=smoke", "rank=1", *defaults)
    assert result["method"] == "lowrank"
    with pytest.raises(ValueError, match=r"variant lora does not read lowrank\.detach_norm=True"):
        LowRankConfig("lora", 2, detach_norm=True)


def test_an_unknown_lowrank_setting_is_an_error_listing_the_known_ones():
    """``+lowrank.<typo>=…`` passes Hydra's check (the ``+`` adds the key) and would otherwise
    end in a TypeError from the config's constructor."""
    cfg = compose_config("task=bof", "preset=smoke", "rank=1", "+lowrank.dropuot=0.1")
    with pytest.raises(ValueError, match=r"^unknown setting lowrank\.dropuot; .*dropout"):
        lowrank_config(cfg, "bof")


@pytest.mark.parametrize(
    ("task", "adapter", "detach"),
    [("glue", "lora", False), ("glue", "dora", True), ("commonsense", "lora", False)],
)
def test_the_paper_preset_detaches_the_norm_only_where_there_is_one(task, adapter, detach):
    """preset=paper sets DoRA's ``detach_norm`` for the variants that read it, so that its LoRA
    runs do not set what they ignore; on the command line it is an error for LoRA."""
    cfg = compose_config(f"task={task}", "preset=paper", f"adapter={adapter}", "rank=8")
    config = lowrank_config(cfg, task)
    assert config is not None and config.detach_norm is detach
    assert OmegaConf.to_container(cfg.lowrank, resolve=True)["detach_norm"] is detach
    if adapter == "lora":
        cfg = compose_config(
            f"task={task}", "preset=paper", "adapter=lora", "rank=8", "lowrank.detach_norm=true"
        )
        with pytest.raises(ValueError, match=r"variant lora does not read lowrank\.detach_norm"):
            lowrank_config(cfg, task)
