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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from sinelr.apply import densify
from sinelr.checkpoint import CHECKPOINT_DIR, LAST, STATE_KEY, read_checkpoint, run_checkpoint
from sinelr.layers import LOWRANK_LAYERS, LoRALinear, LowRankConfig, get_lowrank_class
from sinelr.layers.pissa import PrincipalInit
from sinelr.layers.vera import VeRALinear
from sinelr.plan import build_task
from sinelr.run_config import lowrank_config
from sinelr.task import Task

log = logging.getLogger(__name__)

#: The PEFT methods :func:`save_peft` writes a plain variant's adapters in: the ``peft_method``
#: its class declares. LoRA and DoRA are PEFT's ``LoraConfig`` (``use_dora``); PiSSA is written as
#: the LoRA PEFT converts it to; HiRA and VeRA have configs of their own.
PLAIN_FORMATS = ("lora", "dora", "pissa", "hira", "vera")
#: The plain methods whose sine twin it writes: sinelr.peft's ``SineLoraConfig`` has sine LoRA
#: and, with ``use_dora``, sine DoRA, and no other sine.
SINE_FORMATS = ("lora", "dora")
#: What precedes a layer's name in PEFT's saved keys (which leave the adapter's name out).
PREFIX = "base_model.model."

#: A layer's factors as the run built them, by layer name (:attr:`LoadedRun.start`).
Start = Mapping[str, tuple[Tensor, Tensor]]


def peft_format(variant: str) -> str | None:
    """The PEFT method whose format :func:`save_peft` writes ``variant``'s adapters in: the one
    its class declares it equals (``peft_method``), or for the sine twin of LoRA or DoRA, that
    one through sinelr.peft; None where it writes none."""
    cls = get_lowrank_class(variant)
    if cls.sine_of is None:
        return cls.peft_method if cls.peft_method in PLAIN_FORMATS else None
    plain = get_lowrank_class(cls.sine_of).peft_method
    return plain if plain in SINE_FORMATS else None


def peft_variants() -> list[str]:
    """The registered variants :func:`save_peft` writes, in registration order."""
    return [name for name in LOWRANK_LAYERS if peft_format(name)]


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
) -> list[str]:
    """Write ``model``'s adapters (and any other trained module, e.g. a classification head) in
    PEFT's format; ``model`` is left without its adapters. Returns the adapted layers' names.

    Which variants it writes comes from the registry (:func:`peft_format`): LoRA, DoRA, HiRA
    and VeRA as PEFT's own methods; PiSSA as the LoRA that PEFT converts a PiSSA adapter to, for
    the original base weights (which needs ``start``, :attr:`LoadedRun.start`); sine LoRA and
    sine DoRA with ``sinelr.peft.SineLoraConfig`` (``peft_type`` ``SINELORA``), so this imports
    sinelr.peft, registering its method with PEFT, for a sine run only. PEFT, and PEFT with
    sinelr.peft, compute the same function as the run's layers (tests/test_peft_parity.py,
    tests/test_variants.py, tests/test_sinelr_peft.py), so the adapter loaded gives the logits
    the run's model gives (tests/test_export.py).
    """
    import peft

    method = _writable_method(lowrank)
    # Every variant of PLAIN_FORMATS is a LoRALinear.
    adapters = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    # Other trained modules (a classification head) travel as PEFT's modules_to_save.
    trained = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    heads = sorted(trained - set(adapters))
    options = {"target_modules": list(adapters), "modules_to_save": heads or None}
    if method == "vera":
        config, tensors = _vera(adapters, lowrank, options)
    elif method == "hira":
        config = peft.HiraConfig(r=lowrank.rank, hira_dropout=lowrank.dropout, **options)
        tensors = _tensors(adapters, {"hira_A": "lora_A", "hira_B": "lora_B"})
    elif method == "pissa":
        config, tensors = _pissa_as_lora(adapters, lowrank, options, start)
    else:
        config, tensors = _lora(adapters, lowrank, options, method == "dora")
    for name, layer in adapters.items():
        model.set_submodule(name, layer.base_layer)
    peft_model = peft.get_peft_model(model, config)
    # PEFT's whole adapter state (the heads included, as modules_to_save), ours in its place.
    state = peft.get_peft_model_state_dict(peft_model)
    unexpected = sorted(set(tensors) - set(state))
    if unexpected:  # a tensor left out would be saved at PEFT's initial value, silently
        raise RuntimeError(f"PEFT's {method} has no place for {', '.join(unexpected)}")
    peft.set_peft_model_state_dict(peft_model, state | tensors)
    peft_model.save_pretrained(out)
    _save_tokenizer(model, out)
    return list(adapters)


def _writable_method(lowrank: LowRankConfig | None) -> str:
    """:func:`peft_format` of ``lowrank``'s variant; a one-line error, saying why, where none."""
    method = None if lowrank is None else peft_format(lowrank.variant)
    if method is not None:
        return method
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


def _tensors(adapters: Mapping[str, nn.Module], names: Mapping[str, str]) -> dict[str, Tensor]:
    """Each layer's tensors under PEFT's saved keys: ``names`` maps PEFT's name to ours."""
    return {
        f"{PREFIX}{layer_name}.{peft_name}": getattr(layer, ours).detach()
        for layer_name, layer in adapters.items()
        for peft_name, ours in names.items()
    }


def _lora(
    adapters: Mapping[str, LoRALinear], lowrank: LowRankConfig, options: dict, dora: bool
) -> tuple[Any, dict[str, Tensor]]:
    """LoRA or DoRA, plain (PEFT's ``LoraConfig``) or sine (sinelr.peft's ``SineLoraConfig``)."""
    import peft

    options = {
        **options,
        "r": lowrank.rank,
        "lora_alpha": next(iter(adapters.values())).alpha,
        "lora_dropout": lowrank.dropout,
        "use_dora": dora,
    }
    if get_lowrank_class(lowrank.variant).sine_of is not None:
        import sinelr.peft

        omega = _one_omega(adapters)
        config = sinelr.peft.SineLoraConfig(**options, omega=omega, gain=lowrank.gain)
    else:
        config = peft.LoraConfig(**options)
    names = {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B"}
    if dora:
        names["lora_magnitude_vector"] = "magnitude"
    return config, _tensors(adapters, names)


def _one_omega(adapters: Mapping[str, LoRALinear]) -> float:
    """The ω every sine layer applies now (a learnt one included: ``sin(ω·BA)`` with the
    layer's B and A); sinelr.peft takes one ω per adapter, so layers that differ (``omega=auto``
    on layers of different shapes, a learnt ω) cannot be written in its format."""
    omegas = {layer.current_omega() for layer in adapters.values()}
    if len(omegas) > 1:
        raise ValueError(
            f"the sine layers apply {len(omegas)} different ω ({min(omegas):g} to "
            f"{max(omegas):g}: omega=auto or a learnt ω), and sinelr.peft takes one ω per "
            "adapter. Write a merged checkpoint instead (scripts/merge_adapters.py without "
            "--peft)"
        )
    return omegas.pop()


def _pissa_as_lora(
    adapters: Mapping[str, LoRALinear], lowrank: LowRankConfig, options: dict, start: Start | None
) -> tuple[Any, dict[str, Tensor]]:
    """PiSSA as PEFT saves it for the original base weights (``save_pretrained`` with
    ``path_initial_model_for_weight_conversion``, ``LoraModel.subtract_mutated_init``): PiSSA
    applies ``W_res + s·B A`` with ``W_res = W0 − s·B0 A0``, which is ``W0 + s·(B A − B0 A0)``, a
    LoRA of rank ``2r`` with ``A' = [A; A0]``, ``B' = [B, −B0]`` and ``α' = 2α`` (the same
    ``s``). Written here rather than by that call, which needs the initial adapter saved
    before training and leaves a trained head (``modules_to_save``) out of what it writes.
    """
    import peft

    if start is None or set(start) != set(adapters):
        raise ValueError(
            f"{lowrank.variant} is written for the original base weights from each layer's "
            "step-0 factors, which load_run records: pass save_peft(..., start=run.start)"
        )
    config = peft.LoraConfig(
        **options,
        r=2 * lowrank.rank,
        lora_alpha=2 * next(iter(adapters.values())).alpha,
        lora_dropout=lowrank.dropout,
    )
    tensors = {}
    for name, layer in adapters.items():
        A0, B0 = start[name]
        tensors[f"{PREFIX}{name}.lora_A.weight"] = torch.cat([layer.lora_A.detach(), A0])
        tensors[f"{PREFIX}{name}.lora_B.weight"] = torch.cat([layer.lora_B.detach(), -B0], 1)
    return config, tensors


def _vera(
    adapters: Mapping[str, VeRALinear], lowrank: LowRankConfig, options: dict
) -> tuple[Any, dict[str, Tensor]]:
    """VeRA in PEFT's format, its projections saved (``save_projection``).

    PEFT keeps one projection pair, ``A`` at ``r × max d_in`` and ``B`` at ``max d_out × r``
    over the targeted layers, and gives each layer the slices ``A[:, :d_in]``, ``B[:d_out]``;
    sinelr draws each layer's pair at its own shape. They are PEFT's slices of one pair where
    the targeted layers share their ``d_in`` (the draw of ``A`` decides where that of ``B``
    starts); that is checked here, number for number, and otherwise the export is refused.
    """
    import peft

    layers = list(adapters.values())
    shared_A = max(layers, key=lambda layer: layer.in_features).vera_A
    shared_B = max(layers, key=lambda layer: layer.out_features).vera_B
    widths = sorted({layer.in_features for layer in layers})
    for layer in layers:
        A, B = shared_A[:, : layer.in_features], shared_B[: layer.out_features]
        if not (layer.vera_A.equal(A) and layer.vera_B.equal(B)):
            raise ValueError(
                f"{lowrank.variant} cannot be saved as PEFT adapters for these layers: PEFT's "
                "VeRA slices one projection pair for every layer, and sinelr's per-layer "
                f"projections equal its slices only where all targeted layers have one input "
                f"width (these have {', '.join(map(str, widths))}); write a merged checkpoint "
                "instead (scripts/merge_adapters.py without --peft)"
            )
    config = peft.VeraConfig(
        **options,
        r=lowrank.rank,
        vera_dropout=lowrank.dropout,
        projection_prng_key=VeRALinear.projection_seed,
        d_initial=VeRALinear.d_initial,
        save_projection=True,
    )
    tensors = _tensors(adapters, {"vera_lambda_b": "lambda_b", "vera_lambda_d": "lambda_d"})
    tensors["base_model.vera_A"] = shared_A
    tensors["base_model.vera_B"] = shared_B
    return config, tensors


def _save_tokenizer(model: nn.Module, out: Path) -> None:
    """The base model's tokenizer beside the weights, so that ``out`` is self-contained."""
    from transformers import AutoTokenizer

    source = getattr(model, "name_or_path", "")
    try:
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    except (OSError, ValueError) as error:
        log.warning("no tokenizer saved: %s has none that loads (%s)", source, error)
