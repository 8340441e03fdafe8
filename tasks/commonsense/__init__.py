"""Task ``commonsense``: LoRA/DoRA (± sine) on a causal LM, commonsense reasoning (Tables 2, 7).

A pretrained causal LM (``task.model``, LLaMA-3-8B in the paper) gets adapters from the factory
on ``task.targets`` (q, k, v, up and down projections of every layer) and is fine-tuned on
commonsense_170k with everything else frozen, then answers the eight test sets by generation
(:mod:`tasks.commonsense.prompts`). ``metric`` is ``test/acc``, the mean of the eight sets'
accuracies (``test/acc/<set>``); each set's responses go to ``predictions/<set>.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.optim import LinearWarmup
from sinelr.pretrained import attach_adapters, load_pretrained, weights_dtype
from sinelr.task import LightningTask, RunContext, check_epochs
from tasks.commonsense.data import CommonsenseData, CommonsenseDataModule, load_tokenizer
from tasks.commonsense.module import CommonsenseModule, Generation

PAPER = "paper"
#: The paper: lr 1e-4 for (sine) LoRA (Table 5), 6e-5 for (sine) DoRA (Table 8); 3 epochs each.
PAPER_LR = {"lora": 1e-4, "dora": 6e-5}


@dataclass(kw_only=True, eq=False)
class CommonsenseTask(LightningTask, CommonsenseData):
    """``conf/task/commonsense.yaml``'s keys: the data module's (:class:`CommonsenseData`) and
    these."""

    metric = "test/acc"
    fine_tunes = True

    name: str
    model: str
    targets: str | Sequence[str]
    adapter: str | None
    lr: float | Literal["paper"]
    # field(): required, not defaulted to LightningTask.epochs; checked in __post_init__.
    epochs: int | None = field()
    warmup_steps: int
    weight_decay: float
    max_new_tokens: int
    num_beams: int
    gradient_checkpointing: bool
    dtype: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self.schedule = LinearWarmup(
            lr=_learning_rate(self.lr, self.adapter),
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
        )
        self.epochs = check_epochs(self.epochs)
        self.generation = Generation(self.max_new_tokens, self.num_beams)
        self.weights_dtype = weights_dtype(self.dtype)
        self._tokenizer = None

    @property
    def selection_metric(self) -> str:
        # DoRA's recipe validates by the loss on held-out training examples; generating answers
        # for them would cost what scoring a test set does.
        return "val/loss"

    @property
    def selection_higher_is_better(self) -> bool:
        return False

    @property
    def validates_apart(self) -> bool:
        return self.val_size > 0

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        from transformers import AutoModelForCausalLM

        model = load_pretrained(AutoModelForCausalLM, self.model, dtype=self.weights_dtype)
        if lowrank is not None:
            attach_adapters(model, self.targets, lowrank, "commonsense")
        if self.gradient_checkpointing:
            # transformers 5 renamed it; non-reentrant: works although the frozen embeddings'
            # output requires no gradient.
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)({"use_reentrant": False})
        return model

    @property
    def tokenizer(self):
        """One tokenizer for the data and for decoding what the model generates."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model)
        return self._tokenizer

    def datamodule(self, ctx: RunContext) -> CommonsenseDataModule:
        return CommonsenseDataModule(self, self.tokenizer, ctx.data_dir, ctx.seed)

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> CommonsenseModule:
        # Checked here, not in build_model: a dry run counts a half-precision dense model fine.
        if any(p.requires_grad and p.dtype.itemsize < 4 for p in model.parameters()):
            name = str(self.weights_dtype).removeprefix("torch.")
            raise InputError(
                f"rank=null fine-tunes every weight, and task.dtype={name} would train them in "
                "half precision: pass task.dtype=float32 for full fine-tuning"
            )
        return CommonsenseModule(
            model,
            self.tokenizer,
            self.eval_sets,
            self.schedule,
            self.generation,
            output_dir=ctx.output_dir,
        )


def _learning_rate(lr: float | str, adapter: str | None) -> float:
    """``paper``: the paper's rate for the adapter; any other value is the schedule's to check."""
    if lr == PAPER:
        if adapter not in PAPER_LR:
            raise InputError(
                f"task.lr={PAPER} is the paper's adapter rate (LoRA 1e-4, DoRA 6e-5) and needs "
                f"adapter=lora or adapter=dora, got adapter={adapter}; pass task.lr=<number> "
                "for another adapter or for full fine-tuning"
            )
        return PAPER_LR[adapter]
    return lr
