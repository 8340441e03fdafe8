"""Export: dense weights of every variant, merged transformers checkpoints, PEFT adapters.

A checkpoint is written here the way a run writes one (the run's fingerprint in the ``sinelr``
callback state, the LightningModule's ``model.``-prefixed weights) from a tiny Llama or BERT
with random, non-zero adapters, so every test is offline and takes seconds.

Tolerance: a merged layer applies ``W0 + ΔW`` in one matmul where the adapter sums two (or
applies DoRA's norm differently), another rounding order; the errors are float32 rounding of the
same sums, bounded as in tests/test_peft_parity.py by ``2·layers·sqrt(widest)·2^-24`` of the
output's scale. A wrong merge (a missed layer, a wrong scaling) moves the logits by the
adapters' whole effect, which each test checks is far larger. The same bound holds for PEFT's
adapters: PEFT applies the same sums (for PiSSA, ``W0 + s·(BA − B0A0)`` where the run applies
``(W0 − s·B0A0) + s·BA``), only rounded in another order.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from sinelr.apply import apply_lowrank, densify
from sinelr.checkpoint import STATE_KEY, RunState
from sinelr.export import load_run, save_merged, save_peft
from sinelr.fingerprint import fingerprints
from sinelr.layers import LowRankConfig, LowRankLayer, get_lowrank_class
from sinelr.omega_record import layer_omegas, sine_layers
from sinelr.run_config import lowrank_config
from tests.helpers import compose_config, make_tiny_llama
from tests.test_glue import tiny_bert  # noqa: F401  (fixture)
from tests.test_peft_parity import assert_close_to_scale

peft = pytest.importorskip("peft", reason="PEFT export needs peft (pip install -e .[dev])")

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["lowrank", "sine_lowrank", "lora", "sine_lora", "dora", "sine_dora"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def tolerance(config) -> float:
    widest = max(config.hidden_size, config.intermediate_size, config.vocab_size)
    return 2 * (config.num_hidden_layers + 1) * math.sqrt(widest) * 2**-24


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_the_dense_layer_it_computes(variant):
    torch.manual_seed(0)
    omega = 30.0 if variant.startswith("sine") else None
    model = nn.Sequential(nn.Linear(24, 40), nn.Conv2d(40, 16, 1))
    apply_lowrank(model, ["0", "1"], LowRankConfig(variant, 3, omega=omega))
    for layer in model.modules():
        if isinstance(layer, LowRankLayer) and hasattr(layer, "lora_B"):
            nn.init.normal_(layer.lora_B, std=0.3)  # a trained adapter, not the B = 0 start
    model.eval()
    x = torch.randn(2, 24)

    def forward(m: nn.Module) -> torch.Tensor:
        h = m[0](x)
        return m[1](h[:, :, None, None])

    with torch.no_grad():
        expected = forward(model)
        assert densify(model) == ["0", "1"]
        assert type(model[0]) is nn.Linear and type(model[1]) is nn.Conv2d
        assert model[1].weight.shape == (16, 40, 1, 1)
        torch.testing.assert_close(forward(model), expected, rtol=1e-5, atol=1e-5)


def write_run(task_overrides: list[str], variant: str, run_dir: Path) -> nn.Module:
    """A run directory with a checkpoint of the task's model, adapters set to random values.

    Returns the adapted model in eval mode, as it was saved.
    """
    adapter = variant.removeprefix("sine_")
    omega = "100" if variant.startswith("sine") else "null"
    overrides = [f"adapter={adapter}", "rank=2", f"omega={omega}"]
    if "alpha" in get_lowrank_class(variant).hyperparameters:
        overrides.append("lowrank.alpha=6")  # alpha != rank: the scaling must survive the export
    cfg = compose_config(*task_overrides, *overrides)
    task = instantiate(cfg.task, _recursive_=False, _convert_="all")
    torch.manual_seed(0)
    model = task.build_model(lowrank_config(cfg, task.name))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # adapters, magnitudes, a head: all "trained"
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    checkpoint = {
        "state_dict": state,
        "callbacks": {STATE_KEY: {"fingerprint": fingerprints(cfg).checkpoint}},
    }
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")
    return model.eval()


def llama_logits(model: nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 12, 7, 30], [1, 8, 8, 21, 4, 3]])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("variant", ["lora", "sine_lora", "dora", "sine_dora"])
def test_merged_llama_checkpoint_gives_the_adapted_logits(tiny_llama, tmp_path, variant):
    from transformers import AutoModelForCausalLM

    adapted = write_run(["task=commonsense", f"task.model={tiny_llama}"], variant, tmp_path / "run")
    expected = llama_logits(adapted)
    _, model, lowrank, _ = load_run(tmp_path / "run")
    assert lowrank.variant == variant and lowrank.alpha == 6
    assert len(save_merged(model, tmp_path / "merged")) == 2 * 5  # q, k, v, up, down × 2 layers
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any(isinstance(m, LowRankLayer) for m in merged.modules())
    base = llama_logits(AutoModelForCausalLM.from_pretrained(tiny_llama).eval())
    tol = tolerance(merged.config)
    assert (base - expected).abs().max() > 100 * tol * expected.abs().max()  # adapters matter
    assert_close_to_scale(llama_logits(merged), expected, tol)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


#: What ``adapter_config.json`` says for each variant written: PEFT type, rank, ``use_dora``.
#: PiSSA is the rank-2r LoRA that PEFT converts it to; its α doubles with r (the same α/r).
PEFT_CONFIGS = {
    "lora": ("LORA", 2, False),
    "dora": ("LORA", 2, True),
    "sine_lora": ("SINELORA", 2, False),
    "sine_dora": ("SINELORA", 2, True),
    "pissa": ("LORA", 4, False),
    "hira": ("HIRA", 2, None),
}


@pytest.mark.parametrize("variant", list(PEFT_CONFIGS))
def test_peft_adapters_load_with_peft_and_give_the_same_logits(tiny_llama, tmp_path, variant):
    """Plain adapters in PEFT's own format, loaded onto the original base model (for PiSSA too,
    whose run froze a residual instead); sine ones as sinelr.peft's method, which loads after
    ``import sinelr.peft`` (save_peft imported it here, as a user's process would)."""
    from transformers import AutoModelForCausalLM

    # task.lr: the paper's rate (the default) is LoRA's or DoRA's; any number does here.
    task = ["task=commonsense", f"task.model={tiny_llama}", "task.lr=1e-4"]
    adapted = write_run(task, variant, tmp_path / "run")
    expected = llama_logits(adapted)
    run = load_run(tmp_path / "run")
    assert set(run.start) == (set(run_layers(adapted)) if variant == "pissa" else set())
    save_peft(run.model, run.lowrank, tmp_path / "peft", run.start)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp_path / "peft").iterdir()
    }
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tol = tolerance(base.config)
    # The adapters matter: a PiSSA adapter written without -B0 A0, say, would be caught.
    assert (llama_logits(base) - expected).abs().max() > 100 * tol * expected.abs().max()
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    config = loaded.peft_config["default"]
    peft_type, rank, dora = PEFT_CONFIGS[variant]
    assert (config.peft_type, config.r) == (peft_type, rank)
    assert getattr(config, "use_dora", None) == dora
    assert getattr(config, "omega", None) == (100.0 if variant.startswith("sine") else None)
    if peft_type != "HIRA":
        assert config.lora_alpha / config.r == 3.0  # lowrank.alpha=6 at rank 2
    assert_close_to_scale(llama_logits(loaded), expected, tol)


def run_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, LowRankLayer)]


def test_vera_adapters_load_with_peft_where_the_layers_share_their_width(
    tiny_bert,  # noqa: F811
    tmp_path,
):
    """GLUE's query and value layers all read the hidden width: sinelr's projections are the
    slices of one pair that PEFT's VeRA keeps, saved with the adapters (``save_projection``), and
    those are PEFT's own draws from ``projection_prng_key`` (to the last bit of the bound, as in
    tests/test_variants.py). The trained head travels too."""
    from transformers import AutoModelForSequenceClassification

    adapted = write_run(["task=glue", f"task.model={tiny_bert}"], "vera", tmp_path / "run")
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 12, 6, 3, 0]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    tol = tolerance(adapted.config)
    with torch.no_grad():  # the adapters matter: Λb = 0 is VeRA's start, ΔW = 0
        for name in run_layers(adapted):
            adapted.get_submodule(name).lambda_b.zero_()
        without = adapted(input_ids=ids).logits
    assert (without - expected).abs().max() > 100 * tol * expected.abs().max()
    run = load_run(tmp_path / "run")
    save_peft(run.model, run.lowrank, tmp_path / "peft", run.start)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    config = loaded.peft_config["default"]
    assert (config.peft_type, config.r, config.save_projection) == ("VERA", 2, True)
    assert config.modules_to_save == ["classifier"]
    redrawn = peft.get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2),
        peft.VeraConfig(r=2, target_modules=config.target_modules),
    )
    for name in ("vera_A", "vera_B"):
        torch.testing.assert_close(
            getattr(loaded.base_model, name)["default"],
            getattr(redrawn.base_model, name)["default"],
        )
    with torch.no_grad():
        logits = loaded(input_ids=ids).logits
    assert_close_to_scale(logits, expected, tol)


def test_vera_export_is_refused_where_peft_would_slice_other_projections(tmp_path):
    """Layers of two input widths: PEFT would give the narrower one a slice of the wider one's
    draw, not the draw sinelr made at its own shape."""
    model = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 4))
    apply_lowrank(model, ["0", "1"], LowRankConfig("vera", 2))
    with pytest.raises(ValueError, match=r"^vera cannot be saved.*one input width.*6, 8.*merged"):
        save_peft(model, LowRankConfig("vera", 2), tmp_path)


def test_pissa_export_needs_the_step_0_factors(tmp_path):
    model = nn.Sequential(nn.Linear(8, 6))
    apply_lowrank(model, ["0"], LowRankConfig("pissa", 2))
    with pytest.raises(ValueError, match=r"step-0 factors.*start=run\.start"):
        save_peft(model, LowRankConfig("pissa", 2), tmp_path)


def test_peft_export_carries_a_trained_classification_head(tiny_bert, tmp_path):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    adapted = write_run(["task=glue", f"task.model={tiny_bert}"], "lora", tmp_path / "run")
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 12, 6, 3, 0]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    _, model, lowrank, _ = load_run(tmp_path / "run")
    save_peft(model, lowrank, tmp_path / "peft")
    assert peft.PeftConfig.from_pretrained(tmp_path / "peft").modules_to_save == ["classifier"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    with torch.no_grad():
        logits = loaded(input_ids=ids).logits
    assert_close_to_scale(logits, expected, tolerance(base.config))


#: A sine twin's reason, as a regular expression.
SINE_WHY = r"PEFT has no method it equals \(sinelr\.peft adds sine LoRA and sine DoRA only\)"
REFUSED = {
    "full": (None, "the full fine-tuning baseline cannot be saved as PEFT adapters: it has none"),
    "sine_lowrank": (LowRankConfig("sine_lowrank", 2, omega=30.0), SINE_WHY),
    "loraxs": (LowRankConfig("loraxs", 2), "PEFT has no method it equals"),
    **{
        f"sine_{plain}": (LowRankConfig(f"sine_{plain}", 2, omega=30.0), SINE_WHY)
        for plain in ("pissa", "vera", "hira", "loraxs")
    },
}


@pytest.mark.parametrize(("lowrank", "why"), REFUSED.values(), ids=REFUSED.keys())
def test_variants_peft_cannot_load_are_refused_saying_why(tmp_path, lowrank, why):
    """Full fine-tuning and from-scratch low rank have no adapters, LoRA-XS has no PEFT method,
    and sinelr.peft has no sine but sine LoRA's and sine DoRA's: merged checkpoints only."""
    name = "" if lowrank is None else rf"{lowrank.variant} cannot be saved as PEFT adapters: .*"
    with pytest.raises(ValueError, match=rf"^{name}{why}; --peft writes .*merged checkpoint"):
        save_peft(nn.Linear(4, 4), lowrank, tmp_path)


def test_a_run_without_checkpoint_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoints/last.ckpt.*not by a dry run"):
        load_run(tmp_path)


def test_a_checkpoint_whose_task_refuses_its_settings_fails_with_the_tasks_own_line(tmp_path):
    # The driver's one-line error, not Hydra's InstantiationException around it, which
    # scripts/merge_adapters.py would not catch.
    cfg = compose_config("task=bof", "preset=smoke", "rank=1", "task.resolution=4")
    checkpoint = {
        "state_dict": {},
        "callbacks": {STATE_KEY: {"fingerprint": fingerprints(cfg).checkpoint}},
    }
    (tmp_path / "checkpoints").mkdir()
    torch.save(checkpoint, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"^task.resolution must be at least 8, got 4$"):
        load_run(tmp_path)


@pytest.mark.slow
def test_merge_script_exports_a_run(tiny_llama, tmp_path):
    """The command line, on a run directory, both ways; --peft writes a sine run for sinelr.peft."""
    write_run(["task=commonsense", f"task.model={tiny_llama}"], "sine_lora", tmp_path / "run")

    def script(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "scripts.merge_adapters", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)

    merged = script(tmp_path / "run", "--out", tmp_path / "merged")
    assert merged.returncode == 0, merged.stderr
    assert "10 layers merged" in merged.stdout
    assert (tmp_path / "merged" / "config.json").is_file()
    exported = script(tmp_path / "run", "--out", tmp_path / "peft", "--peft")
    assert exported.returncode == 0, exported.stderr
    assert "10 sine_lora adapters in PEFT's format (load after `import sinelr.peft`)" in (
        exported.stdout
    )
    saved = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (saved["peft_type"], saved["omega"]) == ("SINELORA", 100.0)


def test_an_auto_omega_run_is_rebuilt_with_the_omegas_its_layers_got(
    tiny_bert,  # noqa: F811
    tmp_path,
    caplog,
):
    """omega=auto's ω depends on the run's schedule, which the fingerprint does not hold: the
    checkpoint carries each layer's ω (RunState), and the rebuilt network applies exactly those,
    without asking the rule (whose log would say, wrongly, that the schedule is unknown)."""
    overrides = ["task=glue", f"task.model={tiny_bert}", "adapter=lora", "rank=2", "omega=auto"]
    cfg = compose_config(*overrides, "task.max_train_examples=64")
    task = instantiate(cfg.task, _recursive_=False, _convert_="all")
    torch.manual_seed(0)
    model = task.build_model(lowrank_config(cfg, task.name, task.learning_schedule()))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape))
    state = RunState(fingerprints(cfg).checkpoint)
    state.setup(None, SimpleNamespace(model=model), "fit")
    assert state.omega_start and len(set(state.omega_start.values())) == 1  # one layer shape
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "callbacks": {STATE_KEY: state.state_dict()},
    }
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, tmp_path / "run" / "checkpoints" / "last.ckpt")
    with caplog.at_level(logging.INFO, logger="sinelr"):
        run = load_run(tmp_path / "run")  # rebuilt without the schedule: from the checkpoint's ω
    assert layer_omegas(sine_layers(run.model)) == state.omega_start
    assert "omega=auto" not in caplog.text
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 12, 6, 3, 0]])
    with torch.no_grad():  # the same weights and ω through the same code: exactly equal
        assert torch.equal(run.model(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    save_peft(run.model, run.lowrank, tmp_path / "peft")
    (omega,) = set(state.omega_start.values())
    assert peft.PeftConfig.from_pretrained(tmp_path / "peft").omega == omega


def test_sine_layers_of_different_omega_are_not_written_for_peft(tmp_path):
    """sinelr.peft takes one ω per adapter: layers that differ (auto, learnt) are refused."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    apply_lowrank(model, ["0"], LowRankConfig("sine_lora", 2, omega=50.0))
    apply_lowrank(model, ["1"], LowRankConfig("sine_lora", 2, omega=70.0))
    with pytest.raises(ValueError, match=r"2 different ω \(50 to 70.*merged checkpoint"):
        save_peft(model, LowRankConfig("sine_lora", 2, omega=50.0), tmp_path / "peft")
