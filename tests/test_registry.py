"""The registry is the one source of truth: a variant registered in-process is built, counted,
reported, exported and named on the command line with no other edit; its declarations are
checked when it registers; a setting it does not read is an error."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
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
    VeRALinear,
    get_lowrank_class,
    method_names,
    plain_variants,
    register_lowrank,
    unregister_lowrank,
    variant_name,
)
from sinelr.layers.sine import SINE_SETTINGS
from sinelr.report import layout, markdown, summarise
from sinelr.report.model import method_order
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

    gain_rule = GainRule.FAN_IN  # the sine is the weight

    def weight_rows(self, rows: slice, U: Tensor, V: Tensor) -> Tensor:
        return self.sine(U[rows] / 2, V)

    def weight_rows_vjp(self, rows: slice, U: Tensor, V: Tensor) -> Any:
        return HalfLowRank.weight_rows_vjp(self, rows, U, V)  # autograd over weight_rows


class FrozenALoRA(LoRALinear):
    """LoRA with ``A`` frozen at its random start (LoRA-FA): only ``B`` trains."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lora_A.requires_grad_(False)


class SineFrozenALoRA(SineLoRALinear, FrozenALoRA):
    """``ΔW = (α/r)·sin(ω·B A)/g`` with ``A`` frozen."""

    gain_rule = GainRule.FAN_IN  # the sine is added to W0


TOYS = {
    "half_toy": HalfLowRank,
    "sine_half_toy": SineHalfLowRank,
    "lorafa_toy": FrozenALoRA,
    "sine_lorafa_toy": SineFrozenALoRA,
}


@contextmanager
def registered(variants: dict[str, type[LowRankLayer]]) -> Iterator[None]:
    """``variants`` registered, in order, and removed on leaving (twins first)."""
    try:
        for name, cls in variants.items():
            register_lowrank(name)(cls)
        yield
    finally:
        for name in reversed(variants):
            if name in LOWRANK_LAYERS:
                unregister_lowrank(name)


@pytest.fixture
def toys() -> Iterator[None]:
    """The toy variants registered for one test, and removed after it."""
    with registered(TOYS):
        yield


def test_registered_toys_are_removed_on_leaving():
    before = list(LOWRANK_LAYERS)
    with registered(TOYS):
        assert list(LOWRANK_LAYERS) == before + list(TOYS)
        assert set(TOYS) <= set(method_order())
    assert list(LOWRANK_LAYERS) == before
    assert not set(TOYS) & set(method_order())


@pytest.mark.usefixtures("toys")
def test_a_name_and_a_class_register_once():
    with pytest.raises(ValueError, match=r"^low-rank variant 'half_toy' is already registered"):
        register_lowrank("half_toy")(LowRankLinear)
    with pytest.raises(ValueError, match=r"HalfLowRank as 'halves': .* already, as 'half_toy'"):
        register_lowrank("halves")(HalfLowRank)


@pytest.mark.usefixtures("toys")
def test_a_subclass_does_not_inherit_what_its_parent_computes():
    """LoRA-FA computes another function than LoRA: no PEFT method, no PEFT export and no
    ``omega=auto`` rule come with the parent class. Its twin takes the plain variant's facts."""
    plain, twin = LOWRANK_LAYERS["lorafa_toy"], LOWRANK_LAYERS["sine_lorafa_toy"]
    assert (LoRALinear.peft_method, LoRALinear.omega_auto) == ("lora", True)
    assert LoRALinear.peft_adapter is not None and SineLoRALinear.peft_adapter is not None
    for cls in (plain, twin):
        assert (cls.peft_method, cls.omega_auto, cls.peft_adapter) == (None, False, None)
    assert (plain.kind, plain.sine_of, twin.kind, twin.sine_of) == (
        "adapter", None, "adapter", "lorafa_toy",
    )  # fmt: skip
    assert twin.hyperparameters == plain.hyperparameters | SINE_SETTINGS


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
    order = method_order()
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


class DeclaresSineOf(LowRankLinear):
    sine_of = None


class TwinOfUnregistered(SineLowRankLinear):
    gain_rule = GainRule.FAN_IN


class TwinOfATwin(SineLoRALinear):
    gain_rule = GainRule.FAN_IN


class PlainWithOmega(LowRankLinear):
    hyperparameters = frozenset({"omega"})


class PlainWithASine(SineLowRankLinear):
    pass


class TypoSetting(LowRankLinear):
    hyperparameters = frozenset({"droput"})


class ASet(LowRankLinear):
    hyperparameters: ClassVar = {"dropout"}  # a set, not the frozenset asked for


class UnbuildableSetting(LowRankLinear):
    hyperparameters = frozenset({"dropout"})  # a LoRA setting: the constructor has no dropout


@pytest.mark.parametrize(
    ("name", "cls", "message"),
    [
        ("undeclared", Undeclared, "does not declare kind, hyperparameters"),
        ("declares", DeclaresSineOf, "sine_of follows from the name"),
        ("sine_nowhere", TwinOfUnregistered, "'nowhere' is not a registered plain variant"),
        ("sine_sine_lora", TwinOfATwin, "'sine_lora' is not a registered plain variant"),
        ("omega_plain", PlainWithOmega, "a plain variant reads no omega"),
        ("with_a_sine", PlainWithASine, "a plain variant reads no omega and has no sine"),
        ("typo", TypoSetting, "hyperparameters must be LowRankConfig fields"),
        ("a_set", ASet, "hyperparameters must be a frozenset, got {'dropout'}"),
        ("unbuildable", UnbuildableSetting, "its constructor takes no dropout"),
        ("not_a_layer", nn.Linear, "a variant subclasses sinelr.layers.LowRankLayer"),
    ],
)
def test_declarations_are_checked_when_a_variant_registers(name, cls, message):
    before = dict(LOWRANK_LAYERS)
    attributes = dict(vars(cls))
    prefix = f"^cannot register {cls.__qualname__} as '{name}': "
    with pytest.raises(ValueError, match=prefix + ".*" + re.escape(message)):
        register_lowrank(name)(cls)
    assert before == LOWRANK_LAYERS
    assert dict(vars(cls)) == attributes  # a class refused is left as it was


class DoRAToy(DoRALinear):
    pass


class TwinWithoutTheNorm(SineLoRALinear):
    gain_rule = GainRule.FAN_IN  # all else right, but LoRA's constructor has no detach_norm


class TwinOfAnotherKind(SineDoRALinear):
    gain_rule = GainRule.FAN_IN
    kind = "scratch"


class TwinClaimingPeft(SineDoRALinear):
    gain_rule = GainRule.FAN_IN
    peft_method = "dora"


class TwinWithItsOwnSettings(SineDoRALinear):
    gain_rule = GainRule.FAN_IN
    hyperparameters = frozenset({"omega"})


class TwinWithoutTheSine(DoRAToy):
    gain_rule = GainRule.FAN_IN


class TwinInheritingTheGain(SineDoRALinear):
    pass  # all else right, but the gain rule is sine DoRA's, not its own


class TwinWithAGainNumber(SineDoRALinear):
    gain_rule: ClassVar = 1.0  # a number, not a rule: it would not follow the layer's shape


@pytest.mark.parametrize(
    ("twin", "message"),
    [
        (TwinWithoutTheNorm, "its constructor takes no detach_norm, which the variant reads"),
        (TwinOfAnotherKind, "it declares kind, which a sine twin takes from dora_toy"),
        (TwinClaimingPeft, "it declares peft_method, which a sine twin takes from dora_toy"),
        (TwinWithItsOwnSettings, "it declares hyperparameters, which a sine twin takes from"),
        (TwinWithoutTheSine, "a sine twin subclasses sinelr.layers.sine.SineActivated"),
        (TwinInheritingTheGain, "a sine twin declares its default gain on the class itself"),
        (TwinWithAGainNumber, "a sine twin declares its default gain on the class itself"),
    ],
)
def test_a_sine_twin_is_refused_unless_it_derives_from_its_plain_variant(twin, message):
    with registered({"dora_toy": DoRAToy}):
        with pytest.raises(ValueError, match=message):
            register_lowrank("sine_dora_toy")(twin)
        assert "sine_dora_toy" not in LOWRANK_LAYERS


class VeRAToy(VeRALinear):
    """VeRA under another name: no α."""


class SineVeRAToy(SineLoRALinear, VeRAToy):
    """Sine LoRA's path on VeRA's factors, declaring only its gain: LoRA's constructor, first
    in line, takes ``alpha``, which VeRA does not read."""

    gain_rule = GainRule.FAN_IN


def test_a_twin_that_declares_only_its_gain_reads_its_plain_variants_settings():
    """The twin's settings are VeRA's and the sine's, not those of the classes it is built
    from: ``lowrank.alpha`` is refused when the config is made, and the layer builds and trains
    from every setting it reads."""
    with registered({"vera_toy": VeRAToy, "sine_vera_toy": SineVeRAToy}):
        assert SineVeRAToy.hyperparameters == VeRAToy.hyperparameters | SINE_SETTINGS
        assert "alpha" not in SineVeRAToy.hyperparameters
        with pytest.raises(ValueError, match=r"sine_vera_toy does not read lowrank\.alpha=4"):
            LowRankConfig("sine_vera_toy", 2, omega=30.0, alpha=4.0)
        config = LowRankConfig("sine_vera_toy", 2, omega=30.0, dropout=0.1, learn_omega=True)
        torch.manual_seed(0)
        layer = SineVeRAToy.from_linear(nn.Linear(12, 10), config)
        assert (layer.scaling, layer.lora_dropout.p, layer.log_omega is not None) == (
            1.0,
            0.1,
            True,
        )
        layer(torch.randn(4, 12)).square().sum().backward()
        assert layer.lambda_d.grad is not None and layer.log_omega.grad is not None


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
