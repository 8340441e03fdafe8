"""The factorised layers: formulas, exact gradients, merging, caching, extension.

The contract every variant keeps (exact gradients on both paths, merging, dropout, memory,
precision) is tested for each registered variant, as the registry lists them: a variant
registered in src/sinelr/layers is tested here with no edit. tests/test_variants.py tests what
PiSSA, VeRA, LoRA-XS and HiRA do beyond it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from sinelr.accounting import rank_diagnostics, rank_stats
from sinelr.layers import (
    LOWRANK_LAYERS,
    LowRankConfig,
    LowRankLayer,
    LowRankLinear,
    SineLoRALinear,
    SineLowRankLinear,
    get_lowrank_class,
    variant_name,
)
from tests.helpers import rel

#: Every registered variant, and those of each sort the contract tests below ask for.
VARIANTS = list(LOWRANK_LAYERS)
ADAPTERS = [v for v in VARIANTS if LOWRANK_LAYERS[v].kind == "adapter"]
SINE = [v for v in VARIANTS if LOWRANK_LAYERS[v].sine_of is not None]
MATERIALISED = [v for v in VARIANTS if LOWRANK_LAYERS[v].materialises_weight]
#: The adapters whose start is not the pretrained layer: LoRA-XS's ``R`` starts non-zero, as its
#: paper's does (tests/test_variants.py measures how far).
STARTS_AWAY_FROM_W0 = {"loraxs", "sine_loraxs"}


def reads(variant: str, setting: str) -> bool:
    return setting in LOWRANK_LAYERS[variant].hyperparameters


def with_detached_norm(variants: list[str]) -> list:
    """Each variant, and again with ``lowrank.detach_norm=true`` where it reads that."""
    return [
        *(pytest.param(v, False, id=v) for v in variants),
        *(pytest.param(v, True, id=f"{v}-detached") for v in variants if reads(v, "detach_norm")),
    ]


def make_layer(
    variant: str,
    *,
    d_in: int = 12,
    d_out: int = 10,
    rank: int = 3,
    dtype: torch.dtype = torch.float64,
    trained: bool = True,
    **kwargs,
) -> LowRankLayer:
    """A ``d_in → d_out`` layer of ``variant`` (ω = 30 if it has one) in a trained state, unless
    ``trained=False``: zero starts (LoRA's B, VeRA's Λb) make some gradients vanish."""
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out, dtype=dtype)
    omega = kwargs.pop("omega", 30.0 if variant in SINE else None)
    config = LowRankConfig(variant=variant, rank=rank, omega=omega, **kwargs)
    layer = get_lowrank_class(variant).from_linear(base, config)
    if trained:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in trained_parameters(layer).items():
                if name != "log_omega":
                    param.add_(0.5 * torch.randn(param.shape, generator=generator, dtype=dtype))
    return layer


def trained_parameters(layer: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in layer.named_parameters() if p.requires_grad}


def test_variant_names_follow_rank_omega_adapter():
    assert variant_name(None, None) == "dense"
    assert variant_name(None, 800.0) == "dense"
    assert variant_name(5, None) == "lowrank"
    assert variant_name(5, 800.0) == "sine_lowrank"
    assert variant_name(4, None, "lora") == "lora"
    assert variant_name(4, 200.0, "dora") == "sine_dora"
    with pytest.raises(ValueError, match="adapter"):
        variant_name(4, None, "ia3")


def test_sine_lowrank_weight_is_its_formula():
    layer = SineLowRankLinear(16, 8, 2, omega=800.0, dtype=torch.float64)
    expected = torch.sin(800.0 * (layer.U @ layer.V)) / math.sqrt(16)
    torch.testing.assert_close(layer.effective_weight(), expected, rtol=0, atol=0)
    x = torch.randn(5, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ expected.T + layer.bias)


def test_sine_lora_update_is_its_formula():
    layer = make_layer("sine_lora", alpha=6.0, omega=200.0)
    scaling = 6.0 / 3
    delta = scaling * torch.sin(200.0 * (layer.lora_B @ layer.lora_A)) / math.sqrt(12)
    # Equal up to the order of the scalar factors: a few float64 ulps of O(1) entries.
    torch.testing.assert_close(layer.factorised_weight(), delta, rtol=0, atol=1e-15)
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ delta.T)


def test_dora_weight_is_its_formula():
    layer = make_layer("sine_dora", omega=50.0)
    W0 = layer.base_layer.weight
    direction = W0 + layer.factorised_weight()
    expected = layer.magnitude[:, None] * direction / direction.norm(dim=1, keepdim=True)
    torch.testing.assert_close(layer.effective_weight(), expected)
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ expected.T + layer.base_layer.bias)


def test_gain_defaults_to_sqrt_d_in_and_is_configurable():
    assert SineLowRankLinear(256, 64, 1, omega=200.0).gain == 16.0
    assert SineLowRankLinear(256, 64, 1, omega=200.0, gain=4.0).gain == 4.0


def test_init_matches_nn_linear_bounds():
    layer = LowRankLinear(400, 300, 7)
    assert layer.U.abs().max() <= 1 / math.sqrt(7)  # kaiming_uniform(a=√5): 1/sqrt(fan_in)
    assert layer.V.abs().max() <= 1 / math.sqrt(400)
    assert layer.bias.abs().max() <= 1 / math.sqrt(400)
    assert layer.V.abs().max() > 0.9 / math.sqrt(400)  # the bound is used, not something smaller


@pytest.mark.parametrize("variant", ["dora", "sine_dora"])
def test_a_merged_dora_moves_with_what_unmerging_needs(variant):
    """Unmerging DoRA needs the row norms kept at merge time; a move or cast of the merged
    layer (``.to(device)``, ``.double()``) must take them along, as it takes the weights (on a
    GPU a norm left on the CPU could not meet the weight). They are not saved, as the merged
    state is not."""
    layer = make_layer(variant, dtype=torch.float32)
    W0 = layer.base_layer.weight.detach().double()
    with torch.no_grad():
        layer.merge()
        layer.double()
        assert dict(layer.named_buffers())["_merge_norm"].dtype == torch.float64
        assert "_merge_norm" not in layer.state_dict()
        layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, W0, rtol=1e-5, atol=1e-6)


def dora_reference(
    layer, params: dict[str, Tensor], x: Tensor, x_drop: Tensor, detach_norm: bool
) -> Tensor:
    """``layer``'s output written out with plain autograd, its trained parameters as ``params``
    (the frozen layer sees ``x``, the adapter ``x_drop``)."""
    W0, bias = layer.base_layer.weight, layer.base_layer.bias
    product = params["lora_B"] @ params["lora_A"]
    omega = getattr(layer, "omega", None)
    delta = product if omega is None else torch.sin(omega * product) / layer.gain
    direction = W0 + layer.scaling * delta
    norm = direction.norm(dim=1, keepdim=True)
    weight = params["magnitude"][:, None] * direction / (norm.detach() if detach_norm else norm)
    return F.linear(x, W0, bias) + F.linear(x_drop, weight - W0)


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
@pytest.mark.parametrize("variant", ["dora", "sine_dora"])
def test_detached_norm_gradients_follow_a_detached_reference(variant, fused, dropout):
    """``detach_norm=True``: the forward pass is DoRA's, and the gradients are those of DoRA
    with ``.detach()`` on ``||W0 + ΔW||`` (DoRA paper §4.3), not the exact ones."""
    layer = make_layer(variant, omega=30.0 if variant == "sine_dora" else None, fused=fused,
                       dropout=dropout, block_elems=24, detach_norm=True)  # fmt: skip
    layer.train()
    trained = {n: p for n, p in layer.named_parameters() if p.requires_grad}
    assert set(trained) == {"lora_A", "lora_B", "magnitude"}
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in trained.items()}
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    torch.manual_seed(1)
    y = layer(x)
    torch.manual_seed(1)
    x_drop = layer.lora_dropout(x)
    probe = torch.randn_like(y)
    (y * probe).sum().backward()
    expected = {}
    for detach_norm in (True, False):
        y_ref = dora_reference(layer, leaves, x, x_drop, detach_norm)
        grads = torch.autograd.grad((y_ref * probe).sum(), list(leaves.values()))
        expected[detach_norm] = dict(zip(leaves, grads, strict=True))
    # float64 throughout: assert_close's defaults (1e-7) leave room for the other order of
    # rounding of the row-blocked path and nothing more.
    torch.testing.assert_close(y, y_ref)
    for name, param in trained.items():
        torch.testing.assert_close(param.grad, expected[True][name], msg=name)
    # The norm's gradient is no rounding error: the exact gradients of A and B are others.
    for name in ("lora_A", "lora_B"):
        exact, detached = expected[False][name], expected[True][name]
        assert (exact - detached).abs().max() > 1e-3 * exact.abs().max()


def test_rank_of_sine_rises_with_omega():
    torch.manual_seed(0)
    layer = LowRankLinear(256, 256, 1, dtype=torch.float64)
    ranks = [
        rank_stats(torch.sin(omega * layer.U @ layer.V))["numerical_rank"]
        for omega in (1.0, 30.0, 300.0, 3000.0)
    ]
    assert ranks == sorted(ranks) and ranks[-1] > ranks[0] + 20
    assert rank_stats(layer.U @ layer.V)["numerical_rank"] == 1


def weight_builds(monkeypatch: pytest.MonkeyPatch, layer: nn.Module) -> list[None]:
    """A list that grows by one each time ``layer`` builds its whole weight
    (``effective_weight``), to see when the inference cache rebuilds it and when it reuses it."""
    builds: list[None] = []
    build = layer.effective_weight

    def counted() -> Tensor:
        builds.append(None)
        return build()

    monkeypatch.setattr(layer, "effective_weight", counted)
    return builds


def test_inference_cache_follows_parameter_updates(monkeypatch):
    layer = SineLowRankLinear(32, 16, 2, omega=100.0)
    builds = weight_builds(monkeypatch, layer)
    layer.eval()
    x = torch.randn(3, 32)
    with torch.no_grad():
        first = layer(x)
        assert layer(x).equal(first) and len(builds) == 1  # built once, then reused
        layer.U.add_(0.1)  # an optimiser step is an in-place update
        second = layer(x)
        assert len(builds) == 2
        torch.testing.assert_close(second, F.linear(x, layer.effective_weight(), layer.bias))
        assert not second.equal(first)
        # An edit through .data moves no version counter; eval() drops the cache, so it shows.
        layer.U.data.add_(0.1)
        layer.eval()
        third = layer(x)
        torch.testing.assert_close(third, F.linear(x, layer.effective_weight(), layer.bias))
        assert not third.equal(second)
        layer.train()
        trained = layer(x)
        layer.U.data.add_(0.1)  # never cached while training: each forward sees the edit
        assert not layer(x).equal(trained)


def test_an_adapter_with_dropout_uses_its_cache_in_eval_and_dropout_in_training(monkeypatch):
    """Dropout feeds only the adapter while training; in eval there is none, and the layer
    applies its cached whole weight, as one without dropout does."""
    torch.manual_seed(0)
    layer = SineLoRALinear(nn.Linear(32, 16), 2, omega=100.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 32)
    builds = weight_builds(monkeypatch, layer)
    layer.eval()
    with torch.no_grad():
        out = layer(x)
        assert layer(x).equal(out) and len(builds) == 1
    torch.testing.assert_close(out, F.linear(x, layer.effective_weight(), layer.base_layer.bias))
    layer.train()
    torch.manual_seed(1)
    dropped = layer(x)
    torch.manual_seed(1)
    mask_input = F.dropout(x, 0.5, training=True)
    expected = layer.base_layer(x) + F.linear(mask_input, layer.factorised_weight())
    torch.testing.assert_close(dropped, expected)


def test_inference_cache_follows_buffer_updates():
    """LoRA-XS builds its weight from frozen buffers (the SVD factors), which a checkpoint load
    may replace while ``R`` stays the same."""
    torch.manual_seed(0)
    layer = get_lowrank_class("sine_loraxs").from_linear(
        nn.Linear(32, 16), LowRankConfig("sine_loraxs", 2, omega=100.0)
    )
    with torch.no_grad():
        layer.lora_R.normal_()  # R starts near zero, where the update would hide the change
    layer.eval()
    x = torch.randn(3, 32)
    with torch.no_grad():
        first = layer(x)
        layer.lora_A.mul_(2.0)
        second = layer(x)
    assert not second.equal(first)
    torch.testing.assert_close(second, F.linear(x, layer.effective_weight(), layer.dense_bias()))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="rank"):
        LowRankConfig(variant="lowrank", rank=0)
    with pytest.raises(ValueError, match="omega"):
        LowRankConfig(variant="sine_lowrank", rank=2, omega=-1.0)
    with pytest.raises(ValueError, match="gain"):
        LowRankConfig(variant="sine_lowrank", rank=2, omega=1.0, gain=0.0)
    with pytest.raises(ValueError, match="detach_norm"):
        LowRankConfig(variant="dora", rank=2, detach_norm="yes")
    with pytest.raises(ValueError, match="omega"):
        SineLoRALinear.from_linear(nn.Linear(4, 4), LowRankConfig(variant="sine_lora", rank=1))
    with pytest.raises(
        ValueError, match=r"^unknown low-rank variant 'no_such_variant'; registered: "
    ):
        get_lowrank_class("no_such_variant")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("dropout", "abc"),
        ("gain", "abc"),
        ("alpha", 0.0),
        ("alpha", "abc"),
        ("omega_lr", "abc"),
        ("fused", "no"),
        ("block_elems", 2.5),
        ("block_elems", "abc"),
    ],
)
def test_config_rejects_command_line_values_of_the_wrong_type(setting, value):
    """The command line hands over whatever YAML made of a value: a string where a number is
    meant must give the one-line error naming the setting, not a TypeError from a comparison."""
    with pytest.raises(ValueError, match=f"^{setting} must be"):
        LowRankConfig(variant="sine_lora", rank=2, omega=1.0, **{setting: value})


def test_row_blocked_path_refuses_a_second_derivative():
    """Its backward rebuilds the weight without a graph, so differentiating the gradient again
    (a gradient penalty) would silently give the factors no gradient; it must raise instead."""
    layer = make_layer("sine_lowrank", fused=True)
    x = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.square().sum().backward()


def test_bf16_autocast_keeps_the_sines_rank():
    """Under bf16 autocast the sine's argument ω·UV must stay in fp32.

    Plain autograd computes ``U V`` and ``ω·UV`` in bf16: 8 mantissa bits put a phase error of
    up to ~0.05 rad into the sine, and rows whose rounded arguments coincide collapse, so the
    weight the layer applies loses rank. The fused path rounds only the finished weight.
    """
    torch.manual_seed(0)
    fused = SineLowRankLinear(256, 256, 1, bias=False, omega=200.0)
    naive = SineLowRankLinear(256, 256, 1, bias=False, omega=200.0, fused=False)
    naive.load_state_dict(fused.state_dict())
    reference = fused.effective_weight().detach()
    eye = torch.eye(256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        applied_fused = fused(eye).T.detach()  # the identity reads out each applied weight
        applied_naive = naive(eye).T.detach()
    assert applied_fused.dtype == applied_naive.dtype == torch.bfloat16

    def rank(w):
        return rank_stats(w.double())["numerical_rank"]

    def error(w):
        return float((w.float() - reference).norm() / reference.norm())

    assert rank(reference) >= 250
    assert rank(applied_fused) >= rank(reference) - 2
    assert rank(applied_naive) < 0.8 * rank(reference)
    assert error(applied_fused) < 2**-8  # the final rounding to bf16 only
    assert error(applied_naive) > 4 * error(applied_fused)


@pytest.mark.parametrize("variant", MATERIALISED)
def test_evaluation_under_bf16_autocast_applies_the_learnt_weight(variant):
    """A bf16-mixed run validates and tests in eval mode under autocast, where the layer
    applies its cached whole weight. That weight must be built in fp32 as training builds it:
    built under autocast, ``U V`` was a bf16 matmul and the sine's phase carried its rounding
    (at ω = 30 and entries of order one, several percent of the output).

    Tolerance: input, weight and output each rounded to bf16 once (2^-9 relative each)."""
    layer = make_layer(variant, d_in=64, d_out=48, rank=4, dtype=torch.float32)
    layer.eval()
    x = torch.randn(16, 64)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            applied = layer(x)
        layer.eval()  # drops the cached weight
        expected = layer(x)
    assert applied.dtype == torch.bfloat16
    assert rel(applied, expected) < 2 * 2**-8


@pytest.mark.parametrize("variant", MATERIALISED)
def test_export_merge_and_diagnostics_under_bf16_autocast_build_the_fp32_weight(variant):
    """Export, merge and the rank diagnostics build the whole weight outside the training path,
    and may be called inside a bf16-mixed run (a callback, an export at the end of ``fit``).
    There too ``U V`` must not be a bf16 matmul. The weight is fp32 in both, so the same
    operations in the same order must give it bit for bit."""
    layer = make_layer(variant, d_in=64, d_out=48, rank=4, dtype=torch.float32)
    wrapper = nn.Sequential(layer)
    trained = {k: v.clone() for k, v in layer.state_dict().items()}

    def built():
        exported = layer.to_linear().weight.detach().clone()
        diagnostics = rank_diagnostics(wrapper)["0"]["stable_rank"]
        if not hasattr(layer, "merge"):
            return exported, diagnostics, None
        layer.merge()
        merged = layer.base_layer.weight.detach().clone()
        layer.unmerge()
        layer.load_state_dict(trained)  # unmerge restores only to float rounding
        return exported, diagnostics, merged

    expected = built()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = built()
    assert torch.equal(under_autocast[0], expected[0])
    assert under_autocast[1] == expected[1]
    if expected[2] is not None:
        assert torch.equal(under_autocast[2], expected[2])


def test_bf16_autocast_gradients_follow_fp32():
    torch.manual_seed(0)
    layer = SineLowRankLinear(64, 48, 2, omega=100.0, block_elems=1024)
    x = torch.randn(32, 64)
    layer(x).square().sum().backward()
    expected = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().square().sum().backward()
    for p, g in zip(layer.parameters(), expected, strict=True):
        assert p.grad.dtype == torch.float32
        assert float((p.grad - g).norm() / g.norm()) < 0.03  # bf16 matmuls: ~1% error


# The contract, for every registered variant.


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
@pytest.mark.parametrize(
    ("variant", "learn_omega"),
    [
        *(pytest.param(v, False, id=v) for v in VARIANTS),
        *(pytest.param(v, True, id=f"{v}-learn_omega") for v in SINE),
    ],
)
def test_gradcheck_float64(variant, learn_omega, fused):
    # block_elems=24 → two weight rows per block: the row-blocked path is really exercised.
    layer = make_layer(variant, fused=fused, block_elems=24, learn_omega=learn_omega)
    x = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)
    params = list(trained_parameters(layer).values())
    assert ("log_omega" in trained_parameters(layer)) == learn_omega
    assert torch.autograd.gradcheck(lambda x, *_: layer(x), (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(("variant", "detach_norm"), with_detached_norm(MATERIALISED))
def test_fused_equals_naive_in_fp32(variant, detach_norm):
    """fp32 sums in two orders: the row-blocked path against plain autograd."""
    shape = {"d_in": 64, "d_out": 48, "dtype": torch.float32, "detach_norm": detach_norm}
    fused = make_layer(variant, **shape, block_elems=256)
    naive = make_layer(variant, **shape, fused=False)
    naive.load_state_dict(fused.state_dict())
    x = torch.randn(7, 64)
    y_fused, y_naive = fused(x), naive(x)
    torch.testing.assert_close(y_fused, y_naive, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y_fused)
    y_fused.backward(g)
    y_naive.backward(g)
    for name, p in trained_parameters(fused).items():
        q = trained_parameters(naive)[name]
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


class LargestNewTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation creates (views of the ``known``
    tensors, such as a slice of the frozen weight, allocate nothing and are not counted)."""

    def __init__(self, known: list[Tensor]) -> None:
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in self.known:
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


@pytest.mark.parametrize(
    ("variant", "detach_norm", "dropout"),
    [
        pytest.param(*case.values, dropout, id=f"{case.id}-dropout" if dropout else case.id)
        for case in with_detached_norm(MATERIALISED)
        for dropout in ((0.0, 0.1) if reads(case.values[0], "dropout") else (0.0,))
    ],
)
def test_fused_path_never_builds_a_whole_weight(variant, detach_norm, dropout):
    """Neither the forward nor the backward pass of the row-blocked path creates a tensor the
    size of the weight (256 × 64): the largest is one block of 16 rows, or the activations
    (4 × 256), 1,024 elements each. The plain-autograd layer shows that the check sees one."""
    settings = {"dropout": dropout} if dropout else {}
    x = torch.randn(4, 64)
    largest = {}
    for fused in (True, False):
        layer = make_layer(variant, d_in=64, d_out=256, rank=4, dtype=torch.float32, fused=fused,
                           block_elems=1024, detach_norm=detach_norm, **settings)  # fmt: skip
        layer.train()
        with LargestNewTensor([x, *layer.parameters(), *layer.buffers()]) as mode:
            layer(x).square().sum().backward()
        largest[fused] = mode.largest
    assert largest[False] >= 256 * 64
    assert largest[True] <= 1024


@pytest.mark.parametrize("variant", ADAPTERS)
def test_dropout_feeds_the_adapter_only(variant):
    assert_dropout_feeds_the_adapter_only(make_layer(variant, dropout=0.5, dtype=torch.float32))


def assert_dropout_feeds_the_adapter_only(layer: nn.Module) -> None:
    """The frozen layer sees the clean input, the adapter the dropped-out one (as PEFT)."""
    layer.train()
    x = torch.randn(64, 12)
    torch.manual_seed(1)
    y = layer(x)
    torch.manual_seed(1)
    x_drop = layer.lora_dropout(x)
    update = layer.effective_weight() - layer.base_layer.weight
    torch.testing.assert_close(y, layer.base_layer(x) + x_drop @ update.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("variant", "detach_norm"), with_detached_norm(ADAPTERS))
def test_merge_is_exact_and_unmerge_restores(variant, detach_norm):
    """fp32: one matmul with the merged weight against the adapter's own sum. ``ΔW`` is the
    same merged or not; a variant that keeps ``W0`` while merged (HiRA) gives it back bit for
    bit, the others to rounding."""
    layer = make_layer(variant, dtype=torch.float32, detach_norm=detach_norm)
    layer.eval()
    x = torch.randn(5, 12)
    W0 = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        adapted = layer(x)
        update = layer.factorised_weight().clone()
        layer.merge()
        merged = layer(x)
        assert layer.merged
        torch.testing.assert_close(merged, layer.base_layer(x))
        torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.factorised_weight(), update)
        layer.unmerge()
        torch.testing.assert_close(layer.base_layer.weight, W0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer(x), adapted, rtol=1e-5, atol=1e-6)
    if "hira" in variant:
        assert layer.base_layer.weight.equal(W0)


@pytest.mark.parametrize(
    ("variant", "learn_omega"),
    [
        *(pytest.param(v, False, id=v) for v in ADAPTERS if v not in STARTS_AWAY_FROM_W0),
        *(
            pytest.param(v, True, id=f"{v}-learn_omega")
            for v in ADAPTERS
            if v in SINE and v not in STARTS_AWAY_FROM_W0
        ),
    ],
)
def test_an_adapter_starts_as_the_pretrained_layer(variant, learn_omega):
    """Step 0: a zero factor (LoRA's and HiRA's ``B``, VeRA's ``Λb``) makes ``ΔW`` zero
    (``sin(0) = 0`` for the twins); PiSSA's frozen residual cancels its non-zero start, for sine
    PiSSA the sine's.

    float64: ``W_res + ΔW`` gives back ``W0`` to a few ulps (2^-52) of entries of order one,
    so 1e-12 of the output's scale has room to spare, while a wrong residual (the plain update
    subtracted from the sine, the scaling missed) is off by ``ΔW`` itself."""
    torch.manual_seed(0)
    base = nn.Linear(12, 10, dtype=torch.float64)  # make_layer's seed: the same W0
    W0, bias = base.weight.detach().clone(), base.bias.detach().clone()
    sine = {"omega": 200.0, "learn_omega": learn_omega} if variant in SINE else {}
    layer = make_layer(variant, trained=False, **sine)
    assert not layer.base_layer.weight.requires_grad
    x = torch.randn(6, 12, dtype=torch.float64)
    expected = x @ W0.T + bias
    scale = expected.abs().max()
    with torch.no_grad():
        assert float((layer(x) - expected).abs().max() / scale) < 1e-12
        layer.eval()  # the inference path too
        assert float((layer(x) - expected).abs().max() / scale) < 1e-12


@pytest.mark.parametrize("variant", VARIANTS)
def test_tensors_own_only_their_storage(variant):
    """No parameter or buffer is a view into a larger tensor: an SVD's truncated factors
    sliced from its whole ``U``/``Vh`` would keep them alive in memory and write them into
    every checkpoint (``torch.save`` saves a view's whole storage)."""
    layer = make_layer(variant, d_in=40, d_out=30, rank=3, trained=False)
    tensors = {**dict(layer.named_parameters()), **dict(layer.named_buffers())}
    for name, tensor in tensors.items():
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size(), name


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize(("variant", "detach_norm"), with_detached_norm(ADAPTERS))
def test_an_adapter_on_a_bf16_base_keeps_fp32_factors_and_follows_fp32(
    variant, detach_norm, dropout, fused
):
    """A frozen bf16 base (an LLM loaded with ``task.dtype=bfloat16``) gets float32 factors and
    projections; the same layer in fp32 (its state loaded, so the same numbers) is the
    reference. Factors in bf16 would put the sine's phase ω·BA (ω = 200, |BA| ~ 1) off by up
    to 200·2^-9 ≈ 0.4 rad and lose AdamW's small steps. Tolerances are bf16's: the applied
    weight and the output rounded to 8 mantissa bits (2^-8 relative) once each; the gradients
    through bf16 matmuls (3%)."""
    omega = {"omega": 200.0} if variant in SINE else {}
    settings = {"d_in": 64, "d_out": 48, "rank": 4, "fused": fused, "dropout": dropout,
                "detach_norm": detach_norm, **omega}  # fmt: skip
    half = make_layer(variant, dtype=torch.bfloat16, **settings)
    ref = make_layer(variant, dtype=torch.float32, trained=False, **settings)
    ref.load_state_dict(half.state_dict())
    trainable = list(trained_parameters(half).values())
    assert trainable and all(p.dtype == torch.float32 for p in [*trainable, *half.buffers()])
    assert half.base_layer.weight.dtype == torch.bfloat16
    weight = half.effective_weight()
    assert weight.dtype == torch.bfloat16 and rel(weight, ref.effective_weight()) < 2**-8

    x = torch.randn(16, 64).bfloat16()
    for mode in (nn.Module.train, nn.Module.eval):  # training path, then the inference cache
        mode(half), mode(ref)
        torch.manual_seed(1)
        y = half(x)
        torch.manual_seed(1)
        y_ref = ref(x.float())
        assert y.dtype == torch.bfloat16 and rel(y, y_ref) < 2 * 2**-8
    half.train(), ref.train()
    torch.manual_seed(1)
    half(x).float().square().sum().backward()
    torch.manual_seed(1)
    ref(x.float()).square().sum().backward()
    for name, p in trained_parameters(half).items():
        q = trained_parameters(ref)[name]
        assert p.grad.dtype == torch.float32 and rel(p.grad, q.grad) < 0.03, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_follows_fp32(variant):
    """Training with ``precision=bf16-mixed``: an fp32 layer inside a bf16 autocast region. A
    factor computed from others (LoRA-XS's ``B R``) must stay fp32 there, as the sine's
    argument does: a bf16 one met the fp32 ``A`` in the sine's fp32 product and failed.
    Tolerances as the bf16-base test above: input, weight and output each rounded to bf16 once
    (2^-9 each), the gradients through bf16 matmuls (3%)."""
    layer = make_layer(variant, d_in=64, d_out=48, rank=4, dtype=torch.float32)
    ref = copy.deepcopy(layer)
    x = torch.randn(16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y_ref = ref(x)
    assert y.dtype == torch.bfloat16 and rel(y, y_ref) < 2 * 2**-8
    y.float().square().sum().backward()
    y_ref.square().sum().backward()
    for name, p in trained_parameters(layer).items():
        assert rel(p.grad, trained_parameters(ref)[name].grad) < 0.03, name
