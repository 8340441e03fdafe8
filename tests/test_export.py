"""Export: dense weights of every variant, merged transformers checkpoints, PEFT adapters.

A checkpoint is written here the way a run writes one (the run's fingerprint in the ``sinelr``
callback state, the LightningModule's ``model.``-prefixed weights) from a tiny Llama or BERT
with random, non-zero adapters, so every test is offline and takes seconds.

Tolerance: a merged layer applies ``W0 + ΔW`` in one matmul where the adapter sums two (or
applies DoRA's norm differently), another rounding order; the errors are float32 rounding of the
same sums, bounded as in tests/test_peft_parity.py by ``2·layers·sqrt(widest)·2^-24`` of the
output's scale. A wrong merge (a missed layer, a wrong scaling) moves the logits by the
adapters' whole effect, which each test checks is far larger.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from sinelr.apply import apply_lowrank, densify
from sinelr.checkpoint import STATE_KEY, fingerprint
from sinelr.export import load_run, save_merged, save_peft
from sinelr.layers import LowRankConfig, LowRankLayer
from sinelr.run_config import lowrank_config
from tests.helpers import make_tiny_llama
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
    # alpha != rank: the scaling must survive the export.
    overrides = [f"adapter={adapter}", "rank=2", f"omega={omega}", "lowrank.alpha=6"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*task_overrides, *overrides])
    task = instantiate(cfg.task, _recursive_=False, _convert_="all")
    torch.manual_seed(0)
    model = task.build_model(lowrank_config(cfg, task.name))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # adapters, magnitudes, a head: all "trained"
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    checkpoint = {"state_dict": state, "callbacks": {STATE_KEY: {"fingerprint": fingerprint(cfg)}}}
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
    _, model, lowrank = load_run(tmp_path / "run")
    assert lowrank.variant == variant and lowrank.alpha == 6
    assert len(save_merged(model, tmp_path / "merged")) == 2 * 5  # q, k, v, up, down × 2 layers
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any(isinstance(m, LowRankLayer) for m in merged.modules())
    base = llama_logits(AutoModelForCausalLM.from_pretrained(tiny_llama).eval())
    tol = tolerance(merged.config)
    assert (base - expected).abs().max() > 100 * tol * expected.abs().max()  # adapters matter
    assert_close_to_scale(llama_logits(merged), expected, tol)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


@pytest.mark.parametrize("variant", ["lora", "dora", "sine_lora", "sine_dora"])
def test_peft_adapters_load_with_peft_and_give_the_same_logits(tiny_llama, tmp_path, variant):
    """Plain adapters in PEFT's own format; sine ones as sinelr.peft's method, which loads after
    ``import sinelr.peft`` (save_peft imported it here, as a user's process would)."""
    from transformers import AutoModelForCausalLM

    adapted = write_run(["task=commonsense", f"task.model={tiny_llama}"], variant, tmp_path / "run")
    expected = llama_logits(adapted)
    _, model, lowrank = load_run(tmp_path / "run")
    save_peft(model, lowrank, tmp_path / "peft")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp_path / "peft").iterdir()
    }
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    config = loaded.peft_config["default"]
    assert config.use_dora == variant.endswith("dora")
    assert (config.peft_type, getattr(config, "omega", None)) == (
        ("SINELORA", 100.0) if variant.startswith("sine") else ("LORA", None)
    )
    assert_close_to_scale(llama_logits(loaded), expected, tolerance(base.config))


def test_peft_export_carries_a_trained_classification_head(tiny_bert, tmp_path):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    adapted = write_run(["task=glue", f"task.model={tiny_bert}"], "lora", tmp_path / "run")
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 12, 6, 3, 0]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    _, model, lowrank = load_run(tmp_path / "run")
    save_peft(model, lowrank, tmp_path / "peft")
    assert peft.PeftConfig.from_pretrained(tmp_path / "peft").modules_to_save == ["classifier"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    with torch.no_grad():
        logits = loaded(input_ids=ids).logits
    assert_close_to_scale(logits, expected, tolerance(base.config))


@pytest.mark.parametrize(
    ("lowrank", "name"),
    [(None, "the full fine-tuning baseline"), (LowRankConfig("sine_lowrank", 2, omega=30.0), "")],
    ids=["full", "sine_lowrank"],
)
def test_only_adapter_runs_can_be_peft_adapters(tmp_path, lowrank, name):
    """Full fine-tuning and from-scratch low rank have no adapters: merged checkpoints only."""
    name = name or lowrank.variant
    with pytest.raises(ValueError, match=rf"{name} cannot be saved as PEFT.*merged checkpoint"):
        save_peft(nn.Linear(4, 4), lowrank, tmp_path)


def test_a_run_without_checkpoint_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoints/last.ckpt.*not by a dry run"):
        load_run(tmp_path)


@pytest.mark.slow
def test_merge_script_exports_a_run(tiny_llama, tmp_path):
    """The command line, on a run directory, both ways; --peft writes a sine run for sinelr.peft."""
    write_run(["task=commonsense", f"task.model={tiny_llama}"], "sine_lora", tmp_path / "run")

    def script(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "scripts" / "merge_adapters.py"), *map(str, args)]
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
