"""A fine-tuned run's network, out of sinelr: a merged transformers checkpoint, or PEFT adapters.

A checkpoint carries its run's fingerprint (task settings, rank, ω, adapter, layer settings), so
the network is rebuilt exactly as the run built it (the base model from ``task.model``) and the
trained weights are loaded into it. Then either

* :func:`save_merged`: every adapter folded into its layer (:func:`sinelr.apply.densify`), saved
  with ``save_pretrained``: a plain checkpoint of the base architecture, for any tool; or
* :func:`save_peft`: the adapters in PEFT's format (``adapter_config.json`` and
  ``adapter_model.safetensors``), which ``PeftModel.from_pretrained`` loads onto the base
  model: plain LoRA, DoRA, HiRA and VeRA as PEFT's own, PiSSA as the rank-``2r`` LoRA PEFT
  converts it to (for the original base weights), sine LoRA/DoRA as sinelr.peft's method
  (loaded after ``import sinelr.peft``; docs/peft.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from omegaconf import OmegaConf
from torch import Tensor, nn

from sinelr.apply import densify
from sinelr.checkpoint import CHECKPOINT_DIR, LAST, STATE_KEY, read_checkpoint, run_checkpoint
from sinelr.layers import LOWRANK_LAYERS, LowRankConfig, LowRankLayer, get_lowrank_class
from sinelr.layers.peft_format import PeftLayers, Start
from sinelr.layers.pissa import PrincipalInit
from sinelr.plan import build_task
from sinelr.run_config import lowrank_config
from sinelr.task import Task

log = logging.getLogger(__name__)


def peft_writer(variant: str) -> type[LowRankLayer] | None:
    """``variant``'s class where it writes its adapters for PEFT (its own ``peft_adapter``),
    None where it writes none."""
    cls = get_lowrank_class(variant)
    return cls if cls.peft_adapter is not None else None


def peft_variants() -> list[str]:
    """The registered variants :func:`save_peft` writes, in registration order."""
    return [name for name in LOWRANK_LAYERS if peft_writer(name)]


class SavedAdapters(NamedTuple):
    """What :func:`save_peft` wrote."""

    #: The adapted layers' names.
    layers: list[str]
    #: How the adapter loads, where not as PEFT's own method of its name ("" where it does).
    note: str


class LoadedRun(NamedTuple):
    """A run rebuilt from its checkpoint (:func:`load_run`)."""

    task: Task
    #: The network with the checkpoint's weights, in eval mode.
    model: nn.Module
    #: Its layers' config; None for the full fine-tuning baseline.
    lowrank: LowRankConfig | None
    #: ``(A0, B0)`` of every layer whose start moved part of ``W0`` into its factors (PiSSA),
    #: as the run built them from the base model: :func:`save_peft` needs them to write such
    #: an adapter for the original base weights.
    start: dict[str, tuple[Tensor, Tensor]]


def checkpoint_file(path: Path) -> Path:
    """``path`` if it is a checkpoint; a run directory's ``checkpoints/last.ckpt`` otherwise."""
    file = run_checkpoint(path) if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {file}: pass a run directory (holding {CHECKPOINT_DIR}/{LAST}, "
            "written by a run that trained, not by a dry run) or a .ckpt file"
        )
    return file


def load_run(path: Path) -> LoadedRun:
    """The task, its network with the checkpoint's weights (eval mode), its layer config, and
    the step-0 factors of PiSSA's layers (read before the checkpoint's weights replace them).

    Everything is read off the checkpoint but the network's architecture, which only the task
    knows: the task is the class its configuration names (``task._target_``), imported as the
    run imported it, so ``tasks/`` must be importable (the repository root, where
    ``python -m scripts.merge_adapters`` runs)."""
    file = checkpoint_file(path)
    checkpoint = read_checkpoint(file)
    state = checkpoint.get("callbacks", {}).get(STATE_KEY)
    if state is None or "state_dict" not in checkpoint:
        raise ValueError(f"{file} is not a sinelr training checkpoint (no run fingerprint)")
    cfg = OmegaConf.create(state["fingerprint"])
    task = build_task(cfg)
    chosen = state.get("omega_start")
    if cfg.omega == "auto" and cfg.rank is not None and not chosen:
        raise ValueError(
            f"{file} is an omega=auto run whose checkpoint does not record the ω its layers "
            "got (written before checkpoints did): export a checkpoint of a run trained since, "
            "or rerun it"
        )
    lowrank = lowrank_config(cfg, task.name, chosen=chosen)
    model = task.build_model(lowrank)
    if model is None:
        raise ValueError(f"task {task.name} has no network to export")
    start = {
        name: (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
        for name, layer in model.named_modules()
        if isinstance(layer, PrincipalInit)
    }
    prefix = "model."  # the LightningModule's attribute holding the network
    weights = {
        key.removeprefix(prefix): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    model.load_state_dict(weights)
    return LoadedRun(task, model.eval(), lowrank, start)


def save_merged(model: nn.Module, out: Path) -> list[str]:
    """Fold the adapters into ``model`` (in place) and ``save_pretrained`` it, with its tokenizer.

    Returns the merged layers' names.
    """
    merged = densify(model)
    model.save_pretrained(out)
    _save_tokenizer(model, out)
    return merged


def save_peft(
    model: nn.Module, lowrank: LowRankConfig | None, out: Path, start: Start | None = None
) -> SavedAdapters:
    """Write ``model``'s adapters (and any other trained module, e.g. a classification head) in
    PEFT's format; ``model`` is left without its adapters.

    The variant's class writes them (its ``peft_adapter``, :func:`peft_variants`): LoRA, DoRA,
    HiRA and VeRA as PEFT's own methods; PiSSA as the LoRA that PEFT converts a PiSSA adapter
    to, for the original base weights (which needs ``start``, :attr:`LoadedRun.start`); sine
    LoRA and sine DoRA as sinelr.peft's method (``peft_type`` ``SINELORA``), so this imports
    sinelr.peft, registering that method with PEFT, for those only. PEFT, and PEFT with
    sinelr.peft, compute the same function as the run's layers (tests/test_peft_parity.py,
    tests/test_variants.py, tests/test_sinelr_peft.py), so the adapter loaded gives the logits
    the run's model gives (tests/test_export.py).
    """
    import peft

    cls = _writer(lowrank)
    adapters = {n: m for n, m in model.named_modules() if isinstance(m, cls)}
    # Other trained modules (a classification head) travel as PEFT's modules_to_save.
    trained = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    heads = sorted(trained - set(adapters))
    options = {"target_modules": list(adapters), "modules_to_save": heads or None}
    adapter = cls.peft_adapter(PeftLayers(adapters, lowrank, options, start))
    if adapter.sinelr_peft:
        import sinelr.peft  # noqa: F401  (registers its method with PEFT, for the config below)
    config = peft.get_peft_config(adapter.config)
    for name, layer in adapters.items():
        model.set_submodule(name, layer.base_layer)
    peft_model = peft.get_peft_model(model, config)
    # PEFT's whole adapter state (the heads included, as modules_to_save), ours in its place.
    state = peft.get_peft_model_state_dict(peft_model)
    unexpected = sorted(set(adapter.tensors) - set(state))
    if unexpected:  # a tensor left out would be saved at PEFT's initial value, silently
        peft_type = adapter.config["peft_type"]
        raise RuntimeError(f"PEFT's {peft_type} has no place for {', '.join(unexpected)}")
    peft.set_peft_model_state_dict(peft_model, state | adapter.tensors)
    peft_model.save_pretrained(out)
    _save_tokenizer(model, out)
    return SavedAdapters(list(adapters), adapter.note)


def _writer(lowrank: LowRankConfig | None) -> type[LowRankLayer]:
    """:func:`peft_writer` of ``lowrank``'s variant; a one-line error, saying why, where none."""
    cls = None if lowrank is None else peft_writer(lowrank.variant)
    if cls is not None:
        return cls
    if lowrank is None:
        why = "the full fine-tuning baseline cannot be saved as PEFT adapters: it has none"
    else:
        cls = get_lowrank_class(lowrank.variant)
        why = f"{lowrank.variant} cannot be saved as PEFT adapters: "
        if cls.sine_of is not None:
            why += "PEFT has no method it equals (sinelr.peft adds sine LoRA and sine DoRA only)"
        elif cls.peft_method:
            why += f"it equals PEFT's {cls.peft_method}, which --peft does not write yet"
        else:
            why += "PEFT has no method it equals"
    raise ValueError(
        f"{why}; --peft writes {', '.join(peft_variants())}. Write a merged checkpoint "
        "instead (scripts/merge_adapters.py without --peft): the trained weights, loadable "
        "by transformers alone"
    )


def _save_tokenizer(model: nn.Module, out: Path) -> None:
    """The base model's tokenizer beside the weights, so that ``out`` is self-contained."""
    from transformers import AutoTokenizer

    source = getattr(model, "name_or_path", "")
    try:
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    except (OSError, ValueError) as error:
        log.warning("no tokenizer saved: %s has none that loads (%s)", source, error)
