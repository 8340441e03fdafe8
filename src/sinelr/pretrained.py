"""Pretrained Hugging Face models for the fine-tuning tasks: loading them, and adapting them.

Shared by every task that fine-tunes a pretrained network (``glue``, ``commonsense``): load a
checkpoint (or, on the meta device, build its architecture from its configuration alone),
freeze it, and put the factory's adapters on the target layers.

The configurations of the paper's models (``microsoft/deberta-v3-base``, ``roberta-base``,
``meta-llama/Meta-Llama-3-8B``) ship in ``hf_configs/``, copied from their hub repositories: a
dry run counts their parameters offline, downloads nothing and (on meta tensors) takes no
memory. LLaMA-3's repository is gated, so without the shipped file even its configuration
would need an access token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sinelr.apply import Targets, apply_lowrank
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig, get_lowrank_class, plain_variants

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SHIPPED_CONFIGS = Path(__file__).parent / "hf_configs"


def shipped_config_file(model: str) -> Path | None:
    """The shipped ``config.json`` of hub id ``model`` (``org/name`` → ``org--name.json``)."""
    path = SHIPPED_CONFIGS / f"{model.replace('/', '--')}.json"
    return path if path.is_file() else None


def load_config(model: str, **kwargs: Any) -> PretrainedConfig:
    """``model``'s transformers configuration: shipped for the paper's defaults, else its own."""
    from transformers import AutoConfig

    shipped = shipped_config_file(model)
    if shipped is not None:
        return AutoConfig.for_model(**{**json.loads(shipped.read_text()), **kwargs})
    return AutoConfig.from_pretrained(model, **kwargs)


#: ``task.dtype`` values: the dtype the frozen pretrained weights are loaded in.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def weights_dtype(name: str) -> torch.dtype:
    """``task.dtype``'s torch dtype; an error listing the choices otherwise."""
    try:
        return DTYPES[name]
    except KeyError:
        raise InputError(f"task.dtype={name!r}: choose one of {', '.join(DTYPES)}") from None


def load_pretrained(
    auto_class: Any,
    model: str,
    hint: str = "",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> nn.Module:
    """``auto_class.from_pretrained(model)`` in ``dtype`` and training mode.

    Half-precision weights halve the memory of a frozen base (16 GB instead of 32 GB for an 8B
    model); the factory's adapters on it stay float32.

    On the meta device (dry runs, the driver's dense parameter count) the model is built from
    its configuration: no weights are read and no memory is taken. ``from_pretrained`` returns a
    model in eval mode; it is put in training mode so that fine-tuning uses the network's dropout,
    as Hugging Face's Trainer does. ``kwargs`` go to the configuration (e.g. ``num_labels``).
    """
    try:
        if torch.get_default_device().type == "meta":
            return auto_class.from_config(load_config(model, **kwargs), dtype=dtype)
        loaded = auto_class.from_pretrained(
            model, dtype=dtype, ignore_mismatched_sizes=True, **kwargs
        )
    except OSError as error:  # includes offline hub errors and missing directories
        raise FileNotFoundError(
            f"task.model={model!r}: cannot load it ({error}). Pass a Hugging Face id while "
            f"online (or with it in the Hugging Face cache), or a local directory saved with "
            f"save_pretrained{hint}"
        ) from None
    return loaded.train()


def attach_adapters(
    model: nn.Module,
    targets: Targets,
    lowrank: LowRankConfig,
    task: str,
    trainable: Sequence[str] = (),
) -> None:
    """Freeze ``model``, put ``lowrank``'s adapters on ``targets``, and unfreeze ``trainable``
    modules (a classification head, trained with the adapters)."""
    if get_lowrank_class(lowrank.variant).kind != "adapter":
        choices = " or ".join(f"adapter={name}" for name in plain_variants("adapter"))
        raise InputError(
            f"task {task} fine-tunes a pretrained network with adapters, not {lowrank.variant!r} "
            f"layers trained from scratch: pass {choices}, or rank=null for full fine-tuning"
        )
    model.requires_grad_(False)
    apply_lowrank(model, targets, lowrank)
    modules = dict(model.named_modules())
    for name in trainable:
        if name not in modules:
            raise InputError(
                f"task.head: {type(model).__name__} has no module {name!r}; its top-level "
                f"modules are {', '.join(n for n, _ in model.named_children())}"
            )
        modules[name].requires_grad_(True)
