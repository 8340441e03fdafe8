"""PiSSA, VeRA, LoRA-XS and HiRA, plain and sine: against PEFT, their starts, their formulas.

What every variant does (exact gradients, merging, dropout, memory, precision, the pretrained
start) is tests/test_layers.py's, for each registered variant; this file tests these four
beyond it.

PEFT parity follows tests/test_peft_parity.py: copies of one encoder (``query``/``value`` of
every layer) adapted by both libraries from the same base weights and factors, then outputs and
gradients compared relative to each tensor's scale, within that file's ``tolerance``: twice
``layers·sqrt(widest layer)·2^-24``, the float32 rounding of one forward and one backward pass
through every layer. PiSSA and VeRA compute what PEFT computes up to the order of rounding
(``(Λd A) x`` where PEFT has ``Λd (A x)``); HiRA applies ``W0 + W0 ⊙ BA`` in one matmul where PEFT
adds ``(W0 ⊙ BA) x`` to ``W0 x``, the same difference as our DoRA's. A real discrepancy (a
missing scaling, a transposed factor, a wrong seed) moves the outputs by the adapters' whole
effect, which each test checks is far larger.
"""

from __future__ import annotations

import copy
import math
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn

from sinelr.accounting import count_parameters
from sinelr.apply import apply_lowrank
from sinelr.layers import LOWRANK_LAYERS, LowRankConfig, get_lowrank_class, plain_variants
from sinelr.run_config import lowrank_config
from tests.helpers import compose_config, dry_run
from tests.test_layers import make_layer

PLAIN = ["pissa", "vera", "loraxs", "hira"]
VARIANTS = [name for plain in PLAIN for name in (plain, f"sine_{plain}")]


def base_linear(d_in: int = 12, d_out: int = 10, dtype: torch.dtype = torch.float64) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(d_in, d_out, dtype=dtype)


def test_registered_with_what_the_registry_needs():
    """The plain variants declare what PEFT method they equal; their twins derive the rest."""
    peft_methods = {"pissa": "pissa", "vera": "vera", "loraxs": None, "hira": "hira"}
    for plain, peft_method in peft_methods.items():
        cls, twin = LOWRANK_LAYERS[plain], LOWRANK_LAYERS[f"sine_{plain}"]
        assert (cls.kind, cls.sine_of, cls.peft_method) == ("adapter", None, peft_method)
        assert (twin.kind, twin.sine_of, twin.peft_method) == ("adapter", plain, None)
        assert cls.hyperparameters | {"omega", "gain", "learn_omega"} <= twin.hyperparameters
    # No α where the paper has none: the vectors (VeRA) or W0 (HiRA) set the update's size.
    assert "alpha" not in LOWRANK_LAYERS["vera"].hyperparameters
    assert "alpha" not in LOWRANK_LAYERS["hira"].hyperparameters
    for plain in ("vera", "hira"):
        with pytest.raises(TypeError, match="has no alpha"):
            LOWRANK_LAYERS[plain](base_linear(), 2, alpha=4.0)
    # The rule's start is LoRA's: HiRA's, not PiSSA's, VeRA's or LoRA-XS's (docs/omega.md).
    assert {p for p in PLAIN if LOWRANK_LAYERS[p].omega_auto} == {"hira"}


def test_pissa_start_is_the_principal_components():
    """``s·B0 A0`` is ``W0``'s best rank-r approximation ``U_r S_r V_rᵀ``, the residual the
    rest; float64, so the comparison is to rounding (1e-12)."""
    layer = make_layer("pissa", d_in=40, d_out=30, rank=4, alpha=8.0, trained=False)
    W0 = (layer.base_layer.weight + layer.factorised_weight()).detach()
    U, S, Vh = torch.linalg.svd(W0)
    principal = U[:, :4] @ torch.diag(S[:4]) @ Vh[:4]
    torch.testing.assert_close(layer.factorised_weight(), principal, rtol=0, atol=1e-12)
    torch.testing.assert_close(2.0 * layer.lora_B @ layer.lora_A, principal, rtol=0, atol=1e-12)
    # A and B share sqrt(S_r / s): B0ᵀB0 = A0 A0ᵀ = diag(S_r) / s.
    half = torch.diag(S[:4] / 2.0)
    torch.testing.assert_close(layer.lora_B.T @ layer.lora_B, half, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.lora_A @ layer.lora_A.T, half, rtol=0, atol=1e-12)


def test_loraxs_start_follows_the_paper():
    """``B = U_r``, ``A = S_r V_rᵀ`` (the paper's ``A = U_r Σ_r``, ``B = V_rᵀ`` of ``W0ᵀ``), so
    ``B A`` is the truncated SVD; ``R`` Gaussian with standard deviation 1e-5."""
    rank = 8
    layer = make_layer("loraxs", d_in=40, d_out=30, rank=rank, trained=False)
    W0 = layer.base_layer.weight.detach()
    U, S, Vh = torch.linalg.svd(W0)
    B, A, R = layer.lora_B, layer.lora_A, layer.lora_R
    torch.testing.assert_close(B.T @ B, torch.eye(rank, dtype=B.dtype), rtol=0, atol=1e-12)
    torch.testing.assert_close(A @ A.T, torch.diag(S[:rank] ** 2), rtol=0, atol=1e-12)
    truncated = U[:, :rank] @ torch.diag(S[:rank]) @ Vh[:rank]
    torch.testing.assert_close(B @ A, truncated, rtol=0, atol=1e-12)
    assert not B.requires_grad and not A.requires_grad and R.requires_grad
    # 64 draws: the sample standard deviation is within 40% of 1e-5 (4.5 of its own
    # standard deviations, 1/sqrt(2·64)), and the seed is fixed.
    assert 0.6e-5 < float(R.detach().std()) < 1.4e-5
    torch.testing.assert_close(layer.factorised_weight(), B @ R @ A, rtol=1e-12, atol=0)


def test_sine_loraxs_starts_omega_over_g_times_the_plain_change():
    """LoRA-XS's ``R`` starts non-zero: the twin's step-0 change is ``sin(ω·BRA)/g``, the
    plain one's ``BRA`` times ``ω/g`` to within ``(ω·|BRA|)²/6``, the sine's cubic term."""
    plain = make_layer("loraxs", d_in=256, d_out=64, rank=8, trained=False)
    sine = make_layer("sine_loraxs", d_in=256, d_out=64, rank=8, trained=False, omega=200.0)
    assert plain.lora_R.equal(sine.lora_R)  # the same seed, the same start
    argument = float((200.0 * plain.factorised_weight().detach()).abs().max())
    assert 0 < argument < 0.05
    ratio = 200.0 / math.sqrt(256)
    torch.testing.assert_close(
        sine.factorised_weight(), ratio * plain.factorised_weight(), rtol=argument**2, atol=0
    )


def test_sine_hiras_default_gain_lets_each_entry_move_by_its_own_size():
    """Sine HiRA's default ``g`` is 1 (docs/method.md, "Gain per sine twin"): ``ΔW / W0`` is
    ``sin(ω·BA)``, which reaches ±1 once the phases spread. The other twins' ``√d_in`` would
    hold every entry's change under ``1/√384`` (5.1 %) of itself, whatever ω."""
    layer = make_layer("sine_hira", d_in=384, d_out=16, rank=8, omega=200.0)  # B ≠ 0
    assert layer.gain == 1.0
    relative = (layer.factorised_weight() / layer.base_layer.weight).detach().abs()
    assert 0.99 < float(relative.max()) <= 1.0 + 1e-12


def test_sine_hira_starts_out_as_plain_hira_at_the_same_phase():
    """The same room as plain HiRA at the same phase: while ``|ω·BA| ≪ 1``,
    ``W0 ⊙ sin(ω·BA)/g`` with ``g = 1`` is plain HiRA's ``W0 ⊙ B'A`` with ``B' = ω·B``, to
    within the sine's cubic term, ``(ω·|BA|)²/6`` relatively. ``g = √d_in`` would make it
    ``√d_in`` times smaller."""
    sine = make_layer("sine_hira", d_in=384, d_out=16, rank=8, omega=200.0, trained=False)
    plain = make_layer("hira", d_in=384, d_out=16, rank=8, trained=False)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        sine.lora_B.copy_(1e-6 * torch.randn(16, 8, generator=generator, dtype=torch.float64))
        plain.lora_A.copy_(sine.lora_A)
        plain.lora_B.copy_(200.0 * sine.lora_B)
    phase = float((200.0 * sine.lora_B @ sine.lora_A).detach().abs().max())
    assert 0 < phase < 1e-2
    torch.testing.assert_close(
        sine.factorised_weight(), plain.factorised_weight(), rtol=phase**2, atol=0
    )


def test_an_explicit_gain_replaces_sine_hiras_rule():
    """``lowrank.gain`` wins over the rule: ``√384`` gives back the former default's update,
    every entry's change under ``1/√384`` of itself."""
    root = math.sqrt(384)
    layer = make_layer("sine_hira", d_in=384, d_out=16, rank=8, omega=200.0, gain=root)
    assert layer.gain == root
    W0 = layer.base_layer.weight
    expected = W0 * torch.sin(200.0 * (layer.lora_B @ layer.lora_A)) / root
    torch.testing.assert_close(layer.factorised_weight(), expected, rtol=1e-12, atol=0)
    assert float((layer.factorised_weight() / W0).detach().abs().max()) <= 1 / root + 1e-12


@pytest.mark.parametrize("omega", [None, 200], ids=["loraxs", "sine_loraxs"])
def test_loraxs_alpha_is_the_rank_and_its_authors_16_under_the_glue_paper_preset(omega):
    """docs/method.md (LoRA-XS): α = r by default (scaling 1, the authors' math-reasoning
    value); the GLUE paper preset gives it the authors' GLUE α = 16 at every rank, scaling
    16/r; the GLUE mini leaves α at r."""
    variant = "loraxs" if omega is None else "sine_loraxs"
    layer = make_layer(variant, rank=3, trained=False)
    assert (layer.alpha, layer.scaling) == (3.0, 1.0)
    for rank in (1, 8):
        command = ["task=glue", "adapter=loraxs", f"rank={rank}", f"omega={omega or 'null'}"]
        paper = lowrank_config(compose_config(*command, "preset=paper"), "glue")
        assert paper is not None and (paper.variant, paper.alpha) == (variant, 16)
        built = get_lowrank_class(variant).from_linear(base_linear(), paper)
        assert built.scaling == 16 / rank
        mini = lowrank_config(compose_config(*command, "preset=mini"), "glue")
        assert mini is not None and mini.alpha is None


def test_trained_parameters_per_layer():
    """LoRA-XS trains ``r²`` numbers per layer, VeRA ``r + d_out``, PiSSA and HiRA LoRA's
    ``r(d_in + d_out)``; frozen projections are buffers, not counted as parameters."""
    rank, width, layers = 4, 32, 3
    expected = {
        "loraxs": rank**2,
        "vera": rank + width,
        "pissa": rank * 2 * width,
        "hira": rank * 2 * width,
    }
    for variant, per_layer in expected.items():
        torch.manual_seed(0)
        model = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))
        dense = sum(p.numel() for p in model.parameters())
        model.requires_grad_(False)
        apply_lowrank(model, r"\d+", LowRankConfig(variant, rank))
        counts = count_parameters(model, dense)
        assert counts.trainable == counts.lowrank == layers * per_layer, variant
        assert counts.total == dense + layers * per_layer, variant


def test_vera_projections_are_shared_by_layers_of_a_shape():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(8, 16))
    apply_lowrank(model, r"\d+", LowRankConfig("vera", 2))
    assert model[0].vera_A.equal(model[1].vera_A) and model[0].vera_B.equal(model[1].vera_B)
    assert model[0].vera_A.data_ptr() != model[1].vera_A.data_ptr()  # a copy each
    assert not model[2].vera_A.equal(model[0].vera_A[:, :8])  # another shape, another draw
    assert {"0.vera_A", "0.vera_B"} <= set(model.state_dict())  # saved: reloads exactly


@pytest.fixture(scope="module")
def parity() -> ModuleType:
    """tests/test_peft_parity.py's encoders and comparisons (skipping where PEFT is missing)."""
    return pytest.importorskip("tests.test_peft_parity")


@pytest.fixture(params=["tiny-bert", "minilm"], scope="module")
def encoder(request, parity) -> nn.Module:
    build = parity.tiny_bert if request.param == "tiny-bert" else parity.minilm
    return build().requires_grad_(False).eval()


def compare(parity: ModuleType, encoder: nn.Module, ours: nn.Module, theirs: nn.Module):
    """Outputs and input gradients of both models, checked; their parameters' grads are set."""
    inputs, probe = parity.inputs_for(encoder)
    out, grad_x = parity.forward_backward(ours, inputs, probe)
    out_peft, grad_x_peft = parity.forward_backward(theirs, inputs, probe)
    tol = parity.tolerance(encoder)
    effect = parity.pretrained(encoder, inputs) - out
    assert effect.abs().max() > 100 * tol * out.abs().max()  # the adapters do matter
    parity.assert_close_to_scale(out, out_peft, tol)
    parity.assert_close_to_scale(grad_x, grad_x_peft, tol)
    return tol


def test_pissa_start_output_and_gradients_equal_peft(encoder, parity):
    """PEFT's ``init_lora_weights="pissa"`` and ours, from the same encoder: the same start
    (the same SVD; the factors and residuals agree to rounding), then the same function."""
    peft = parity.peft
    ours = copy.deepcopy(encoder)
    config = LowRankConfig("pissa", parity.RANK, alpha=parity.ALPHA)
    replaced = list(apply_lowrank(ours, parity.TARGETS, config).replaced)
    peft_config = peft.LoraConfig(
        r=parity.RANK,
        lora_alpha=parity.ALPHA,
        lora_dropout=0.0,
        target_modules=parity.TARGETS,
        init_lora_weights="pissa",
    )
    theirs = peft.get_peft_model(copy.deepcopy(encoder), peft_config)
    tol = parity.tolerance(encoder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in replaced:
            mine, layer = ours.get_submodule(name), parity.peft_layer_of(theirs, name)
            A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            parity.assert_close_to_scale(mine.lora_A, A, tol)
            parity.assert_close_to_scale(mine.lora_B, B, tol)
            parity.assert_close_to_scale(mine.base_layer.weight, layer.base_layer.weight, tol)
            # A trained state, the same numbers in both.
            mine.lora_B.add_(0.1 * torch.randn(B.shape, generator=generator))
            A.copy_(mine.lora_A)
            B.copy_(mine.lora_B)
            layer.base_layer.weight.copy_(mine.base_layer.weight)
    compare(parity, encoder, ours, theirs)
    for name in replaced:
        mine, layer = ours.get_submodule(name), parity.peft_layer_of(theirs, name)
        parity.assert_close_to_scale(mine.lora_A.grad, layer.lora_A["default"].weight.grad, tol)
        parity.assert_close_to_scale(mine.lora_B.grad, layer.lora_B["default"].weight.grad, tol)


def record_inputs_and_output_grads(model: nn.Module, names: list[str]) -> dict[str, list]:
    """``{name: [input, dL/doutput]}`` of each named layer, filled by the next forward and
    backward pass (tokens flattened)."""
    records: dict[str, list] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: Tensor) -> None:
            records[name] = [args[0].detach().flatten(0, -2)]
            out.register_hook(lambda grad: records[name].append(grad.detach().flatten(0, -2)))

        return record

    for name in names:
        model.get_submodule(name).register_forward_hook(hook(name))
    return records


def test_vera_output_and_gradients_equal_peft(encoder, parity):
    """PEFT's VeRA (``projection_prng_key=0``, ``d_initial=0.1``) and ours draw the same
    projections from the key: nothing but the vectors is copied.

    The vectors' gradients are sums over tokens (and, for ``d``, over the output features) of
    terms that partly cancel: ``dL/db_i = Σ_t G_ti (B Λd A x_t)_i``. Rounding errors, those of
    ``G`` carried back through the layers above included, add up with the terms' sizes, not
    with the sum's, so the error is measured against the largest sum of the terms' sizes with
    every product expanded (``max_i Σ_t |G_ti| (|B| |Λd| |A| |x_t|)_i`` for ``b``) and the same
    tolerance. Measured against the largest gradient instead, MiniLM's first value layer is off
    by 1.25 times the tolerance: its gradient is a sum of terms twice its size."""
    peft = parity.peft
    ours = copy.deepcopy(encoder)
    replaced = list(
        apply_lowrank(ours, parity.TARGETS, LowRankConfig("vera", parity.RANK)).replaced
    )
    peft_config = peft.VeraConfig(
        r=parity.RANK,
        target_modules=parity.TARGETS,
        vera_dropout=0.0,
        projection_prng_key=0,
        d_initial=0.1,
    )
    theirs = peft.get_peft_model(copy.deepcopy(encoder), peft_config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in replaced:
            mine, layer = ours.get_submodule(name), parity.peft_layer_of(theirs, name)
            # The same uniform draws; the bounds sqrt(6/fan) and PEFT's sqrt(3)·sqrt(2)/sqrt(fan)
            # may differ in the last bit, so assert_close's float32 defaults (1.3e-6).
            torch.testing.assert_close(mine.vera_A, layer.vera_A["default"])
            torch.testing.assert_close(mine.vera_B, layer.vera_B["default"])
            d, b = layer.vera_lambda_d["default"], layer.vera_lambda_b["default"]
            assert mine.lambda_d.equal(d) and not mine.lambda_b.any() and not b.any()
            mine.lambda_b.normal_(0.0, 0.5, generator=generator)  # a trained state
            mine.lambda_d.mul_(1 + 0.1 * torch.randn(d.shape, generator=generator))
            d.copy_(mine.lambda_d)
            b.copy_(mine.lambda_b)
    records = record_inputs_and_output_grads(ours, replaced)
    tol = compare(parity, encoder, ours, theirs)
    for name in replaced:
        mine, layer = ours.get_submodule(name), parity.peft_layer_of(theirs, name)
        x, G = (t.abs() for t in records[name])
        A, B, b, d = (
            t.detach().abs() for t in (mine.vera_A, mine.vera_B, mine.lambda_b, mine.lambda_d)
        )
        terms = {  # the largest sum of the terms' sizes, per vector
            "d": float(((G * b) @ B * (x @ A.T)).sum(0).max()),
            "b": float((G * ((x @ A.T * d) @ B.T)).sum(0).max()),
        }
        for vector, ours_grad, peft_grad in [
            ("d", mine.lambda_d.grad, layer.vera_lambda_d["default"].grad),
            ("b", mine.lambda_b.grad, layer.vera_lambda_b["default"].grad),
        ]:
            error = float((ours_grad - peft_grad).abs().max()) / terms[vector]
            assert error <= tol, f"{name} Λ{vector}: off by {error:.2e} of its terms' scale"


def test_hira_output_and_gradients_equal_peft(encoder, parity):
    peft = parity.peft
    ours = copy.deepcopy(encoder)
    replaced = list(
        apply_lowrank(ours, parity.TARGETS, LowRankConfig("hira", parity.RANK)).replaced
    )
    peft_config = peft.HiraConfig(r=parity.RANK, target_modules=parity.TARGETS, hira_dropout=0.0)
    theirs = peft.get_peft_model(copy.deepcopy(encoder), peft_config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in replaced:
            mine, layer = ours.get_submodule(name), parity.peft_layer_of(theirs, name)
            A, B = layer.hira_A["default"], layer.hira_B["default"]
            assert not mine.lora_B.any() and not B.any()  # both start at W0
            mine.lora_B.normal_(0.0, 0.5, generator=generator)  # a trained state
            A.copy_(mine.lora_A)
            B.copy_(mine.lora_B)
    tol = compare(parity, encoder, ours, theirs)
    for name in replaced:
        mine, layer = ours.get_submodule(name), parity.peft_layer_of(theirs, name)
        parity.assert_close_to_scale(mine.lora_A.grad, layer.hira_A["default"].grad, tol)
        parity.assert_close_to_scale(mine.lora_B.grad, layer.hira_B["default"].grad, tol)


@pytest.mark.parametrize("plain", plain_variants("adapter"))
def test_dry_run_names_the_method(tmp_path, plain):
    """The issue's command, offline: ``adapter=<plain>`` writes ``<plain>``, ``omega=`` its
    sine twin; the model is built on the meta device (PiSSA's and LoRA-XS's SVD included)."""
    command = ["task=glue", "task.name=rte", f"adapter={plain}", "rank=8"]
    results = dry_run(tmp_path / "plain", *command)
    assert results["method"] == plain
    assert results["params"]["lowrank"] > 0
    sine = dry_run(tmp_path / "sine", *command, "omega=200")
    assert sine["method"] == f"sine_{plain}"
    assert sine["params"] == results["params"]  # the sine adds no parameter


def reference_weight(layer: nn.Module) -> Tensor:
    """What the layer applies, by the formula in its module's docstring (plain autograd)."""
    W0 = layer.base_layer.weight
    _, left, right = layer.weight_params()
    product = left @ right
    omega = getattr(layer, "omega", None)
    delta = product if omega is None else torch.sin(omega * product) / layer.gain
    if "hira" in layer.variant:
        return W0 + W0 * delta
    return W0 + layer.scaling * delta


@pytest.mark.parametrize("variant", VARIANTS)
def test_weight_is_its_formula(variant):
    alpha = {"alpha": 6.0} if "alpha" in get_lowrank_class(variant).hyperparameters else {}
    layer = make_layer(variant, **alpha)  # α ≠ r where the variant has one
    torch.testing.assert_close(layer.effective_weight(), reference_weight(layer))
    if "vera" in variant:  # the computed factors are Λb B and Λd A
        _, left, right = layer.weight_params()
        torch.testing.assert_close(left, torch.diag(layer.lambda_b) @ layer.vera_B)
        torch.testing.assert_close(right, torch.diag(layer.lambda_d) @ layer.vera_A)
    if "loraxs" in variant:
        _, left, _ = layer.weight_params()
        torch.testing.assert_close(left, layer.lora_B @ layer.lora_R)
