"""sinelr.peft: sine LoRA and sine DoRA as a Hugging Face PEFT method.

On a tiny random Llama built from a config (no download): the method trains in plain PyTorch,
HF ``Trainer`` and Lightning; ``save_pretrained`` writes its settings; ``PeftModel.from_pretrained``
gives the same logits, in this process and in a fresh one; ``merge_and_unload`` folds it in; a
process without ``import sinelr.peft`` cannot load it. The PEFT-side layers agree with
``apply_lowrank``'s ``sine_lora``/``sine_dora`` given the same weights, and the PEFT internals
the method relies on (sinelr/peft/_internals.py) are pinned.

Tolerances, float32 throughout, as tests/test_peft_parity.py argues: where two computations add
the same terms in another order (the base output plus the adapter's, against one matmul with
``W0 + ΔW``; a merged weight against the adapter), they differ by float32 rounding, bounded by
``2·layers·sqrt(widest)·2^-24`` of the tensor's scale; a real error (a missed layer, a wrong
ω, g or scaling, plain LoRA instead of sine) moves outputs by the adapters' whole effect, which
each test checks is far larger.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from sinelr.apply import apply_lowrank
from sinelr.layers import LowRankConfig
from tests.test_peft_parity import assert_close_to_scale, forward_backward, tiny_bert, tolerance

peft = pytest.importorskip("peft", reason="sinelr.peft needs peft (pip install -e .[dev])")
transformers = pytest.importorskip("transformers")
sinelr_peft = pytest.importorskip("sinelr.peft")

from peft.tuners.lora import Linear as PeftLoraLinear  # noqa: E402

from sinelr.peft import _internals  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "v_proj"]
IDS = torch.tensor([[1, 5, 9, 12, 7, 30], [2, 8, 8, 21, 4, 3]])


def llama_config():
    return transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )


def tiny_llama() -> nn.Module:
    """The same random "pretrained" Llama on every call."""
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(llama_config())


def llama_tolerance() -> float:
    config = llama_config()
    widest = max(config.hidden_size, config.intermediate_size, config.vocab_size)
    return 2 * (config.num_hidden_layers + 1) * math.sqrt(widest) * 2**-24


def sine_config(use_dora: bool, **options) -> sinelr_peft.SineLoraConfig:
    return sinelr_peft.SineLoraConfig(
        r=4, lora_alpha=8, omega=200, target_modules=TARGETS, use_dora=use_dora, **options
    )


def logits(model: nn.Module) -> Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def trainable(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_trained(model: nn.Module, before: dict[str, Tensor]) -> None:
    """B and DoRA's magnitude moved (A's gradient is zero while B is), the frozen weights not."""
    after = dict(model.named_parameters())
    moving = {n: p for n, p in before.items() if "lora_A" not in n}
    assert moving and all(not torch.equal(after[n], p) for n, p in moving.items())
    assert all(not p.requires_grad for n, p in after.items() if n not in before)


def one_step(model: nn.Module) -> None:
    """One AdamW step on the next-token loss: B leaves zero, so ΔW counts."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=IDS, labels=IDS).loss.backward()
    optimizer.step()


@pytest.mark.parametrize("use_dora", [False, True], ids=["sine_lora", "sine_dora"])
def test_train_save_load_and_merge_give_the_same_logits(tmp_path, use_dora):
    """The issue's "done when", in one process: a step, a save, a load onto a fresh base and a
    merge all give the trained model's logits."""
    model = peft.get_peft_model(tiny_llama(), sine_config(use_dora))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, _internals.SineLinear)
    before = trainable(model)
    assert len(before) == 2 * 2 * (3 if use_dora else 2)  # q, v × 2 layers: A, B (, m)
    one_step(model)
    assert_trained(model, before)
    expected = logits(model.eval())
    tol = llama_tolerance()
    effect = (logits(tiny_llama()) - expected).abs().max()
    assert effect > 100 * tol * expected.abs().max()  # the adapters matter

    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "SINELORA"
    assert (saved["omega"], saved["gain"], saved["use_dora"]) == (200.0, None, use_dora)

    loaded = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    config = loaded.peft_config["default"]
    assert isinstance(config, sinelr_peft.SineLoraConfig) and config.omega == 200.0
    assert_close_to_scale(logits(loaded), expected, tol)
    lazily = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path, low_cpu_mem_usage=True)
    assert_close_to_scale(logits(lazily.eval()), expected, tol)  # adapters built on "meta"

    loaded.merge_adapter()  # and back: unmerging restores the base weights
    assert_close_to_scale(logits(loaded), expected, tol)
    loaded.unmerge_adapter()
    base = tiny_llama()
    restored = loaded.base_model.model.model.layers[1].self_attn.v_proj.base_layer.weight.detach()
    assert_close_to_scale(restored, base.model.layers[1].self_attn.v_proj.weight.detach(), tol)

    merged = loaded.merge_and_unload()
    assert type(merged) is transformers.LlamaForCausalLM
    assert not any(isinstance(m, PeftLoraLinear) for m in merged.modules())
    assert_close_to_scale(logits(merged), expected, tol)


def test_the_gain_is_saved_and_used(tmp_path):
    """An explicit gain travels in adapter_config.json and enters ΔW = (α/r)·sin(ω·BA)/g."""
    model = peft.get_peft_model(tiny_llama(), sine_config(False, gain=2.0))
    one_step(model)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["gain"] == 2.0
    expected = logits(model.eval())
    tol = llama_tolerance()
    loaded = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    assert_close_to_scale(logits(loaded), expected, tol)
    # The same tensors under the default gain, sqrt(d_in) = 8, give other logits.
    config = sinelr_peft.SineLoraConfig.from_pretrained(tmp_path)
    config.gain = None
    default = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path, config=config).eval()
    assert (logits(default) - expected).abs().max() > 100 * tol * expected.abs().max()


def test_trains_in_the_hf_trainer(tmp_path):
    model = peft.get_peft_model(tiny_llama(), sine_config(True))
    before = trainable(model)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    data = [{"input_ids": row, "labels": row} for row in IDS]
    transformers.Trainer(model=model, args=args, train_dataset=data).train()
    assert_trained(model, before)


def test_trains_in_lightning():
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = peft.get_peft_model(tiny_llama(), sine_config(False))

        def training_step(self, batch: Tensor, _: int) -> Tensor:
            return self.model(input_ids=batch, labels=batch).loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            params = [p for p in self.parameters() if p.requires_grad]
            return torch.optim.AdamW(params, lr=1e-2)

    module = Module()
    before = trainable(module)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(IDS, batch_size=2))
    assert_trained(module, before)


@pytest.mark.parametrize("use_dora", [False, True], ids=["sine_lora", "sine_dora"])
def test_delta_weight_and_merge_under_bf16_autocast_build_the_fp32_weight(use_dora):
    """PEFT's tools may call ``get_delta_weight`` and merge inside a bf16-mixed run; ``B A``
    as a bf16 matmul would round the sine's phase (ω = 200). Both are built in fp32 either way,
    by the same operations, so they must agree bit for bit."""
    model = peft.get_peft_model(tiny_llama(), sine_config(use_dora))
    one_step(model)

    def built() -> tuple[Tensor, Tensor]:
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        delta = layer.get_delta_weight("default").detach().clone()
        merged = copy.deepcopy(model).merge_and_unload()
        return delta, merged.model.layers[0].self_attn.q_proj.weight.detach()

    expected = built()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = built()
    assert torch.equal(under_autocast[0], expected[0])
    assert torch.equal(under_autocast[1], expected[1])


# ---- one implementation: the PEFT-side layers against apply_lowrank's, given the same weights

RANK, ALPHA, OMEGA = 4, 8.0, 200.0
BERT_TARGETS = ["query", "value"]


@pytest.mark.parametrize("variant", ["sine_lora", "sine_dora"])
def test_output_and_gradients_equal_apply_lowrank(variant):
    """PEFT's sine DoRA holds the norm constant in the backward pass, as PEFT's DoRA does, so it
    is compared with ``detach_norm=True``."""
    encoder = tiny_bert().requires_grad_(False).eval()
    dora = variant == "sine_dora"
    ours = copy.deepcopy(encoder)
    config = LowRankConfig(variant, RANK, alpha=ALPHA, omega=OMEGA, detach_norm=dora)
    replaced = list(apply_lowrank(ours, BERT_TARGETS, config).replaced)
    theirs = peft.get_peft_model(
        copy.deepcopy(encoder),
        sinelr_peft.SineLoraConfig(
            r=RANK, lora_alpha=ALPHA, omega=OMEGA, target_modules=BERT_TARGETS, use_dora=dora
        ),
    )
    generator = torch.Generator().manual_seed(1)
    pairs = []
    with torch.no_grad():
        for name in replaced:
            mine = ours.get_submodule(name)
            layer = theirs.base_model.model.get_submodule(name)
            mine.lora_B.normal_(0.0, 0.1, generator=generator)  # B = 0 would hide the sine
            layer.lora_A["default"].weight.copy_(mine.lora_A)
            layer.lora_B["default"].weight.copy_(mine.lora_B)
            pair = [(mine.lora_A, layer.lora_A["default"].weight)]
            pair.append((mine.lora_B, layer.lora_B["default"].weight))
            if dora:
                magnitude = layer.lora_magnitude_vector["default"].weight
                torch.testing.assert_close(magnitude, mine.magnitude)  # both ||W0|| per row
                noise = torch.randn(mine.magnitude.shape, generator=generator)
                mine.magnitude.mul_(1 + 0.1 * noise)
                magnitude.copy_(mine.magnitude)
                pair.append((mine.magnitude, magnitude))
            pairs += pair
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(2, 7, encoder.config.hidden_size, generator=generator)
    probe = torch.randn(2, 7, encoder.config.hidden_size, generator=generator)
    out, grad_x = forward_backward(ours, inputs, probe)
    out_peft, grad_x_peft = forward_backward(theirs, inputs, probe)
    tol = tolerance(encoder)
    with torch.no_grad():
        effect = encoder(inputs_embeds=inputs).last_hidden_state - out
    assert effect.abs().max() > 100 * tol * out.abs().max()
    assert_close_to_scale(out_peft, out, tol)
    assert_close_to_scale(grad_x_peft, grad_x, tol)
    assert len(pairs) == len(replaced) * (3 if dora else 2)
    for mine, peft_param in pairs:
        assert_close_to_scale(peft_param.grad, mine.grad, tol)


# ---- what it refuses, and what it leaves alone


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"omega": None}, r"needs omega.*peft.LoraConfig"),
        ({"omega": -3.0}, r"needs omega, a positive number"),
        ({"gain": 0.0}, r"gain must be a positive number"),
        ({"init_lora_weights": "pissa"}, r"init_lora_weights='pissa' is made for LoRA"),
        ({"lora_bias": True}, r"does not support lora_bias"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(options, message):
    settings = {"r": 4, "lora_alpha": 8, "omega": 200, "target_modules": TARGETS, **options}
    with pytest.raises(ValueError, match=message):
        sinelr_peft.SineLoraConfig(**settings)


def test_a_target_that_is_not_a_linear_layer_is_refused_not_made_plain_lora():
    config = sinelr_peft.SineLoraConfig(r=4, omega=200, target_modules=["q_proj", "embed_tokens"])
    with pytest.raises(TypeError, match=r"nn.Linear.*embed_tokens is a Embedding"):
        peft.get_peft_model(tiny_llama(), config)


def test_plain_lora_is_untouched_by_the_import():
    """Plain LoRA users get PEFT's own layers, config and files after ``import sinelr.peft``."""
    config = peft.LoraConfig(r=4, target_modules=TARGETS, use_dora=True)
    assert config.peft_type == peft.PeftType.LORA and config._custom_modules is None
    model = peft.get_peft_model(tiny_llama(), config)
    layers = [m for m in model.modules() if isinstance(m, PeftLoraLinear)]
    assert len(layers) == 4 and not any(isinstance(m, _internals.SineLinear) for m in layers)


def test_without_the_registration_loading_fails_naming_the_method(tmp_path, monkeypatch):
    """In-process stand-in for a process that never imported sinelr.peft (the slow test below
    runs one): PEFT fails on the unknown ``peft_type`` instead of loading plain LoRA."""
    peft.get_peft_model(tiny_llama(), sine_config(False)).save_pretrained(tmp_path)
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    monkeypatch.delitem(PEFT_TYPE_TO_CONFIG_MAPPING, _internals.PEFT_TYPE)
    with pytest.raises(KeyError, match="SINELORA"):
        peft.PeftModel.from_pretrained(tiny_llama(), tmp_path)


FRESH_PROCESS = """
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base, adapter, out, ids = sys.argv[1:]
try:
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
except Exception as error:
    print(f"without the import: {type(error).__name__}: {error}")
else:
    sys.exit("loaded without import sinelr.peft")
import sinelr.peft  # noqa: E402,F401

model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.tensor(json.loads(ids))).logits, out)
"""


@pytest.mark.slow
def test_a_fresh_process_loads_only_after_the_import(tmp_path):
    """A new process: loading fails until ``import sinelr.peft``, then gives the same logits."""
    base = tiny_llama()
    base.save_pretrained(tmp_path / "base")
    model = peft.get_peft_model(base, sine_config(True))
    one_step(model)
    model.save_pretrained(tmp_path / "adapter")
    expected = logits(model.eval())
    args = [tmp_path / "base", tmp_path / "adapter", tmp_path / "logits.pt", IDS.tolist()]
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"without the import: KeyError: 'SINELORA'", done.stdout), done.stdout
    assert_close_to_scale(torch.load(tmp_path / "logits.pt"), expected, llama_tolerance())


# ---- PEFT's own paths on sine adapters: peft_type, add_weighted_adapter, merging, model cards

WIDTH = 16
COMBINATION_TYPES = [
    "svd",
    "linear",
    "cat",
    "ties",
    "ties_svd",
    "dare_ties",
    "dare_linear",
    "dare_ties_svd",
    "dare_linear_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
]


def mlp_config(targets: list[str], use_dora: bool = False) -> sinelr_peft.SineLoraConfig:
    """``init_lora_weights=False``: B is random, so every adapter changes its layers at once."""
    return sinelr_peft.SineLoraConfig(
        r=4,
        lora_alpha=8,
        omega=30,
        target_modules=targets,
        use_dora=use_dora,
        init_lora_weights=False,
    )


def two_adapter_mlp(second_is_dora: bool, second_targets: list[str]) -> nn.Module:
    """``first`` (sine LoRA on both linear layers) and ``second``, both active."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH))
    model = peft.get_peft_model(base, mlp_config(["0", "2"]), adapter_name="first")
    model.add_adapter("second", mlp_config(second_targets, use_dora=second_is_dora))
    model.base_model.set_adapter(["first", "second"])
    return model.eval()


def mlp_input() -> Tensor:
    return torch.randn(5, WIDTH, generator=torch.Generator().manual_seed(3))


def test_peft_type_is_an_enum_member_as_pefts_own():
    """PEFT reads ``peft_type.value`` and ``str(peft_type)``; adapter_config.json still holds
    the string "SINELORA" (test_train_save_load_and_merge_give_the_same_logits)."""
    config = sine_config(False)
    assert config.peft_type.value == "SINELORA" and config.peft_type == "SINELORA"
    assert str(config.peft_type).partition(".")[-1] == "SINELORA"
    model = peft.get_peft_model(tiny_llama(), config)
    assert model.get_model_status().peft_types == {"default": "SINELORA"}


def test_a_mixed_model_is_refused_with_pefts_own_error():
    with pytest.raises(ValueError, match="'SINELORA' is not compatible with the `PeftMixedModel`"):
        peft.get_peft_model(tiny_llama(), sine_config(False), mixed=True)


def test_hotswapping_is_refused_with_pefts_own_error(tmp_path):
    from peft.utils.hotswap import hotswap_adapter

    model = peft.get_peft_model(tiny_llama(), sine_config(False))
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Hotswapping only supports LORA but SINELORA was passed"):
        hotswap_adapter(model, str(tmp_path), adapter_name="default")


@pytest.mark.parametrize("combination_type", COMBINATION_TYPES)
@pytest.mark.parametrize(
    ("adapters", "weights"),
    [(["first", "second"], [1.0, 1.0]), (["first"], [2.0])],
    ids=["two", "one"],
)
def test_add_weighted_adapter_is_refused_naming_sine_lora(adapters, weights, combination_type):
    """Every combination PEFT offers treats ΔW as B·A, which a sine adapter's is not; PEFT used
    to build the wrong adapter without a word (issue 38)."""
    model = two_adapter_mlp(second_is_dora=False, second_targets=["0", "2"])
    with pytest.raises(ValueError, match=r"cannot combine sine LoRA adapters: .*sin\(ω·BA\)/g"):
        model.add_weighted_adapter(adapters, weights, "both", combination_type=combination_type)
    assert set(model.peft_config) == {"first", "second"}


def test_the_refusals_advice_gives_the_sum_of_the_updates():
    """What the refusal of add_weighted_adapter suggests: both adapters active apply
    ``W0 + ΔW_first + ΔW_second``, and merging them folds in that weight."""
    model = two_adapter_mlp(second_is_dora=False, second_targets=["0", "2"])
    x = mlp_input()
    tol = 4 * math.sqrt(WIDTH) * 2**-24
    with torch.no_grad():
        hidden = x
        for i, activation in ((0, torch.tanh), (2, lambda h: h)):
            layer = model.base_model.model[i]
            deltas = layer.get_delta_weight("first") + layer.get_delta_weight("second")
            weight = layer.base_layer.weight + deltas
            hidden = activation(torch.nn.functional.linear(hidden, weight, layer.base_layer.bias))
        with model.disable_adapter():
            assert (model(x) - hidden).abs().max() > 100 * tol * hidden.abs().max()
        assert_close_to_scale(model(x), hidden, tol)
        assert_close_to_scale(model.merge_and_unload()(x), hidden, tol)


def merge_state(model: nn.Module) -> list[tuple[list[str], Tensor]]:
    return [
        (list(m.merged_adapters), m.get_base_layer().weight.detach().clone())
        for m in model.modules()
        if isinstance(m, _internals.SineLinear)
    ]


@pytest.mark.parametrize("merge", ["merge_and_unload", "merge_adapter", "layer.merge"])
def test_a_refused_merge_leaves_the_model_as_it_was(merge):
    """Sine DoRA merges exactly only into W0, so ``second`` (sine DoRA on layer 2) after
    ``first`` is refused. Every layer is checked first: layer 0, where ``first`` merges fine, is
    left unmerged, and so is layer 2, where ``first`` comes first (before the fix, ``first``
    merged there and the outputs moved by its effect)."""
    model = two_adapter_mlp(second_is_dora=True, second_targets=["2"])
    x = mlp_input()
    with torch.no_grad():
        before, state = model(x), merge_state(model)
    call = {
        "merge_and_unload": model.merge_and_unload,
        "merge_adapter": model.merge_adapter,
        "layer.merge": model.base_model.model[2].merge,
    }[merge]
    with pytest.raises(
        ValueError, match=r"cannot merge sine DoRA adapter 'second' .* hold \['first'\]"
    ):
        call()
    after = merge_state(model)
    assert [names for names, _ in after] == [[], []]
    assert all(torch.equal(w, w0) for (_, w), (_, w0) in zip(after, state, strict=True))
    with torch.no_grad():
        assert torch.equal(model(x), before)
        with model.disable_adapter():
            assert (model(x) - before).abs().max() > 1e-3  # the adapters matter


def test_sine_dora_merged_first_then_sine_lora_is_exact():
    """The order the refusal asks for: ``second`` (sine DoRA) into W0, then ``first``'s ΔW."""
    model = two_adapter_mlp(second_is_dora=True, second_targets=["2"])
    x = mlp_input()
    with torch.no_grad():
        expected = model(x)
        model.merge_adapter(["second", "first"])
        assert [names for names, _ in merge_state(model)] == [["first"], ["second", "first"]]
        assert_close_to_scale(model(x), expected, 4 * math.sqrt(WIDTH) * 2**-24)


def count_base_calls(layer: nn.Module) -> list[None]:
    """Appends to the returned list whenever the layer's frozen nn.Linear runs."""
    calls: list[None] = []
    layer.get_base_layer().register_forward_hook(lambda *_: calls.append(None))
    return calls


@pytest.mark.parametrize("use_dora", [False, True], ids=["sine_lora", "sine_dora"])
def test_one_adapter_is_one_product_equal_to_pefts_two(use_dora):
    """One active adapter: ``W'·x`` as one row-blocked product (the frozen layer never runs on
    its own), with the outputs and gradients of PEFT's ``W0·x`` plus the adapter's term."""
    torch.manual_seed(0)
    model = peft.get_peft_model(nn.Sequential(nn.Linear(WIDTH, WIDTH)), mlp_config(["0"], use_dora))
    layer = model.base_model.model[0]
    calls = count_base_calls(layer)
    x = mlp_input().requires_grad_(True)
    probe = torch.randn(5, WIDTH, generator=torch.Generator().manual_seed(4))
    params = [p for p in layer.parameters() if p.requires_grad]
    assert len(params) == (3 if use_dora else 2)

    def run(forward) -> list[Tensor]:
        out = forward(x)
        return [out.detach(), *torch.autograd.grad((out * probe).sum(), [x, *params])]

    one = run(layer)
    assert not calls
    two = run(lambda x: PeftLoraLinear.forward(layer, x))
    assert len(calls) == 1
    tol = 4 * math.sqrt(WIDTH) * 2**-24
    with torch.no_grad():
        assert (one[0] - layer.get_base_layer()(x)).abs().max() > 100 * tol * one[0].abs().max()
    for mine, peft_s in zip(one, two, strict=True):
        assert_close_to_scale(mine, peft_s, tol)


@pytest.mark.parametrize(
    ("case", "one_product"),
    [
        ("eval, dropout set", True),
        ("bf16 under autocast", True),
        ("training, dropout set", False),
        ("two adapters active", False),
        ("bf16 without autocast", False),
        ("adapters disabled", False),
    ],
)
def test_the_one_product_runs_only_where_it_computes_what_pefts_two_do(case, one_product):
    """Dropout feeds the adapter's term only; several adapters each add their own term; a bf16
    model outside autocast runs PEFT's adapter term in the factors' fp32, which ``W'`` in bf16
    would round to W0's precision: those keep PEFT's forward (the frozen layer runs)."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(WIDTH, WIDTH))
    config = mlp_config(["0"])
    config.lora_dropout = 0.1 if "dropout" in case else 0.0
    model = peft.get_peft_model(base.to(torch.bfloat16) if "bf16" in case else base, config)
    model.train("training" in case)
    if "two" in case:
        model.add_adapter("second", mlp_config(["0"]))
        model.base_model.set_adapter(["default", "second"])
    layer = model.base_model.model[0]
    calls = count_base_calls(layer)
    x = mlp_input().to(layer.get_base_layer().weight.dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled="under autocast" in case):
        if "disabled" in case:
            with model.disable_adapter():
                model(x)
        else:
            model(x)
    assert layer.lora_A["default"].weight.dtype == torch.float32
    assert (not calls) == one_product


@pytest.mark.parametrize("use_dora", [False, True], ids=["sine_lora", "sine_dora"])
def test_adapter_tensors_that_are_not_parameters_are_used(use_dora):
    """FSDP1 (``use_orig_params``) and ``torch.func.functional_call`` hand the layer plain
    tensors where its parameters were; PEFT's own run of its suite found the layer refusing
    them (``cannot assign ... as parameter 'lora_A'``). Doubled B must give another output, the
    one of a model whose B was doubled in place."""
    torch.manual_seed(0)
    model = peft.get_peft_model(nn.Sequential(nn.Linear(WIDTH, WIDTH)), mlp_config(["0"], use_dora))
    x = mlp_input()
    swapped = {n: 2 * p.detach() for n, p in model.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        out = torch.func.functional_call(model, swapped, (x,))
        for name, tensor in swapped.items():
            model.get_parameter(name).copy_(tensor)
        assert torch.equal(out, model(x))


def test_the_layers_repr_names_its_class_by_a_path_that_imports():
    import importlib

    layer = peft.get_peft_model(tiny_llama(), sine_config(False)).base_model.model.model
    layer = layer.layers[0].self_attn.q_proj
    path = repr(layer).split("(", 1)[0]
    module, _, name = path.rpartition(".")
    assert getattr(importlib.import_module(module), name) is type(layer)


def test_the_model_card_tags_the_method_and_says_what_to_import(tmp_path):
    """The README.md beside each adapter: PEFT's card, tagged, with the note on loading at its
    top once however often it is saved; an adapter saved into a subfolder gets a card too."""
    from huggingface_hub import ModelCard

    from sinelr.peft import _card

    model = peft.get_peft_model(tiny_llama(), sine_config(False))
    model.add_adapter("other", sine_config(True))
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    for directory in (tmp_path, tmp_path / "other"):
        card = ModelCard.load(directory / "README.md")
        assert {"sine-lora", "sinelr"} <= set(card.data.tags)
        assert card.text.startswith(_card.HEADING) and card.text.count(_card.HEADING) == 1
        assert "import sinelr.peft" in card.text and "KeyError: 'SINELORA'" in card.text
    assert "PEFT" in (tmp_path / "README.md").read_text()  # PEFT's own card, kept


# ---- the PEFT internals sinelr/peft/_internals.py relies on


def test_register_peft_method_still_refuses_a_method_outside_peft():
    """Why _internals.register writes PEFT's mappings itself. Once PEFT accepts an outside name
    here, sinelr.peft should use this public function instead."""
    from peft.utils import register_peft_method

    with pytest.raises(ValueError, match="Unknown PEFT type"):
        register_peft_method(
            name="sinelr_probe",
            config_cls=sinelr_peft.SineLoraConfig,
            model_cls=peft.LoraModel,
        )


def test_the_internals_in_use_are_there():
    from peft.mapping import (
        PEFT_TYPE_TO_CONFIG_MAPPING,
        PEFT_TYPE_TO_PREFIX_MAPPING,
        PEFT_TYPE_TO_TUNER_MAPPING,
    )

    name = _internals.PEFT_TYPE
    assert PEFT_TYPE_TO_CONFIG_MAPPING[name] is sinelr_peft.SineLoraConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[name] is _internals.SineLoraModel
    assert issubclass(_internals.SineLoraModel, peft.LoraModel)
    assert PEFT_TYPE_TO_PREFIX_MAPPING[name] == "lora_"
    config = sine_config(False)
    assert config.peft_type == name and config._custom_modules == {nn.Module: _internals.SineLinear}
    model = peft.get_peft_model(tiny_llama(), config)
    layer = model.base_model.model.model.layers[0].self_attn.v_proj
    variant = layer.lora_variant["default"]
    assert isinstance(variant, _internals.SineVariant) and variant.omega == 200.0


def test_sine_dora_files_have_peft_doras_tensor_names(tmp_path):
    """Only the config tells a sine DoRA adapter from a PEFT DoRA one: the same tensor names."""
    from safetensors.torch import load_file

    peft.get_peft_model(tiny_llama(), sine_config(True)).save_pretrained(tmp_path / "sine")
    plain = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=True)
    peft.get_peft_model(tiny_llama(), plain).save_pretrained(tmp_path / "plain")
    sine = load_file(tmp_path / "sine" / "adapter_model.safetensors")
    assert set(sine) == set(load_file(tmp_path / "plain" / "adapter_model.safetensors"))
    assert any(key.endswith("lora_magnitude_vector") for key in sine)


DOCS_EXAMPLE = re.compile(r"## Sine LoRA in your PEFT code\n.*?```python\n(.*?)```", re.DOTALL)


def test_the_docs_example_runs(tmp_path, monkeypatch):
    """docs/peft.md's "Sine LoRA in your PEFT code" example, as written (it asserts its own
    results), in a scratch directory."""
    example = DOCS_EXAMPLE.search((ROOT / "docs" / "peft.md").read_text(encoding="utf-8"))
    assert example, "docs/peft.md lost its 'Sine LoRA in your PEFT code' example"
    monkeypatch.chdir(tmp_path)
    exec(compile(textwrap.dedent(example.group(1)), "docs/peft.md", "exec"), {})
    assert (tmp_path / "sine-adapter" / "adapter_config.json").is_file()
