"""A fine-tuned run's network, out of sinelr: a merged transformers checkpoint, or PEFT adapters.

A checkpoint carries its run's fingerprint (task settings, rank, ω, adapter, layer settings), so
the network is rebuilt exactly as the run built it (the base model from ``task.model``) and the
trained weights are loaded into it. Then either

* :func:`save_merged`: every adapter folded into its layer (:func:`sinelr.apply.densify`), saved
  with ``save_pretrained``: a plain checkpoint of the base architecture, for any tool; or
* :func:`save_peft`: the adapters in PEFT's format (``adapter_config.json`` and
  ``adapter_model.safetensors``), which ``PeftModel.from_pretrained`` loads onto the base
  model: plain LoRA/DoRA as PEFT's own, sine LoRA/DoRA as sinelr.peft's method (loaded after
  ``import sinelr.peft``; docs/peft.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from sinelr.apply import densify
from sinelr.checkpoint import CHECKPOINT_DIR, LAST, STATE_KEY, read_checkpoint
from sinelr.layers import LOWRANK_LAYERS, DoRALinear, LoRALinear, LowRankConfig, get_lowrank_class
from sinelr.run_config import lowrank_config
from sinelr.task import Task

log = logging.getLogger(__name__)

#: The PEFT methods :func:`save_peft` writes, each with its ``LoraConfig.use_dora``: LoRA and
#: DoRA are one PEFT method, and sinelr.peft's sine LoRA covers the sine twin of either.
LORA_METHODS = {"lora": False, "dora": True}


def peft_format(variant: str) -> str | None:
    """The PEFT method whose format :func:`save_peft` writes ``variant``'s adapters in: the one
    its class declares it equals (``peft_method``), or for the sine twin of such a variant, that
    one through sinelr.peft; None where it writes none."""
    cls = get_lowrank_class(variant)
    plain = get_lowrank_class(cls.sine_of) if cls.sine_of else cls
    return plain.peft_method if plain.peft_method in LORA_METHODS else None


def peft_variants() -> list[str]:
    """The registered variants :func:`save_peft` writes, in registration order."""
    return [name for name in LOWRANK_LAYERS if peft_format(name)]


def checkpoint_file(path: Path) -> Path:
    """``path`` if it is a checkpoint; a run directory's ``checkpoints/last.ckpt`` otherwise."""
    file = path / CHECKPOINT_DIR / LAST if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {file}: pass a run directory (holding {CHECKPOINT_DIR}/{LAST}, "
            "written by a run that trained, not by a dry run) or a .ckpt file"
        )
    return file


def load_run(path: Path) -> tuple[Task, nn.Module, LowRankConfig | None]:
    """The task, its network with the checkpoint's weights (eval mode), and its layer config."""
    file = checkpoint_file(path)
    checkpoint = read_checkpoint(file)
    state = checkpoint.get("callbacks", {}).get(STATE_KEY)
    if state is None or "state_dict" not in checkpoint:
        raise ValueError(f"{file} is not a sinelr training checkpoint (no run fingerprint)")
    cfg = OmegaConf.create(state["fingerprint"])
    task: Task = instantiate(cfg.task, _recursive_=False, _convert_="all")
    lowrank = lowrank_config(cfg, task.name)
    model = task.build_model(lowrank)
    if model is None:
        raise ValueError(f"task {task.name} has no network to export")
    prefix = "model."  # the LightningModule's attribute holding the network
    weights = {
        key.removeprefix(prefix): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    model.load_state_dict(weights)
    return task, model.eval(), lowrank


def save_merged(model: nn.Module, out: Path) -> list[str]:
    """Fold the adapters into ``model`` (in place) and ``save_pretrained`` it, with its tokenizer.

    Returns the merged layers' names.
    """
    merged = densify(model)
    model.save_pretrained(out)
    _save_tokenizer(model, out)
    return merged


def save_peft(model: nn.Module, lowrank: LowRankConfig | None, out: Path) -> list[str]:
    """Write ``model``'s adapters (and any other trained module, e.g. a classification head) in
    PEFT's format; ``model`` is left without its adapters.

    Which variants it writes comes from the registry (:func:`peft_format`). Plain LoRA and
    DoRA are PEFT's own; sine LoRA and sine DoRA are written with
    ``sinelr.peft.SineLoraConfig`` (``peft_type`` ``SINELORA``), so this imports sinelr.peft,
    registering its method with PEFT, for a sine run only: the format asked for is that method's.
    PEFT, and PEFT with sinelr.peft, compute the same function as the run's layers
    (tests/test_peft_parity.py, tests/test_sinelr_peft.py), so the adapter loaded gives the
    logits the run's model gives.
    """
    import peft

    method = None if lowrank is None else peft_format(lowrank.variant)
    if lowrank is None or method is None:
        if lowrank is None:
            why = "the full fine-tuning baseline cannot be saved as PEFT adapters: it has none"
        else:
            equal = get_lowrank_class(lowrank.variant).peft_method
            why = f"{lowrank.variant} cannot be saved as PEFT adapters: " + (
                f"it equals PEFT's {equal}, which --peft does not write yet"
                if equal
                else "PEFT has no method it equals"
            )
        raise ValueError(
            f"{why}; --peft writes {', '.join(peft_variants())}. Write a merged checkpoint "
            "instead (scripts/merge_adapters.py without --peft): the trained weights, loadable "
            "by transformers alone"
        )
    # Every variant of LORA_METHODS is a LoRALinear, with LoRA's factors.
    adapters = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    # Other trained modules (a classification head) travel as PEFT's modules_to_save.
    trained = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    heads = sorted(trained - set(adapters))
    for name, layer in adapters.items():
        model.set_submodule(name, layer.base_layer)
    options = {
        "r": lowrank.rank,
        "lora_alpha": next(iter(adapters.values())).alpha,
        "lora_dropout": lowrank.dropout,
        "target_modules": list(adapters),
        "modules_to_save": heads or None,
        "use_dora": LORA_METHODS[method],
    }
    if get_lowrank_class(lowrank.variant).sine_of is not None:
        import sinelr.peft

        config = sinelr.peft.SineLoraConfig(**options, omega=lowrank.omega, gain=lowrank.gain)
    else:
        config = peft.LoraConfig(**options)
    peft_model = peft.get_peft_model(model, config)
    for name, layer in adapters.items():
        target = peft_model.base_model.model.get_submodule(name)
        target.lora_A["default"].weight.data.copy_(layer.lora_A)
        target.lora_B["default"].weight.data.copy_(layer.lora_B)
        if isinstance(layer, DoRALinear):
            target.lora_magnitude_vector["default"].weight.data.copy_(layer.magnitude)
    peft_model.save_pretrained(out)
    _save_tokenizer(model, out)
    return list(adapters)


def _save_tokenizer(model: nn.Module, out: Path) -> None:
    """The base model's tokenizer beside the weights, so that ``out`` is self-contained."""
    from transformers import AutoTokenizer

    source = getattr(model, "name_or_path", "")
    try:
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    except (OSError, ValueError) as error:
        log.warning("no tokenizer saved: %s has none that loads (%s)", source, error)
