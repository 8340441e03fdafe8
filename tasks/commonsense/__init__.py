"""Task ``commonsense``: LoRA/DoRA (± sine) on a causal LM, commonsense reasoning (Tables 2, 7).

A pretrained causal LM (``task.model``, LLaMA-3-8B in the paper) gets adapters from the factory
on ``task.targets`` (q, k, v, up and down projections of every layer) and is fine-tuned on
commonsense_170k with everything else frozen, then answers the eight test sets by generation
(:mod:`tasks.commonsense.prompts`). ``metric`` is ``test/acc``, the mean of the eight sets'
accuracies (``test/acc/<set>``); each set's responses go to ``predictions/<set>.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.optim import LinearWarmup
from sinelr.pretrained import attach_adapters, load_pretrained, weights_dtype
from sinelr.task import LightningTask, RunContext, check_epochs
from sinelr.text import TextBatching
from tasks.commonsense.data import CommonsenseDataModule, load_tokenizer
from tasks.commonsense.module import CommonsenseModule, Generation
from tasks.commonsense.prompts import EVAL_SETS

PAPER = "paper"
#: The paper: lr 1e-4 for (sine) LoRA (Table 5), 6e-5 for (sine) DoRA (Table 8); 3 epochs each.
PAPER_LR = {"lora": 1e-4, "dora": 6e-5}


class CommonsenseTask(LightningTask):
    metric = "test/acc"
    fine_tunes = True

    def __init__(
        self,
        name: str,
        model: str,
        targets: str | Sequence[str],
        adapter: str | None,
        train_file: str,
        eval_sets: Sequence[str],
        max_length: int,
        batch_size: int,
        eval_batch_size: int,
        lr: float | Literal["paper"],
        epochs: int | None,
        warmup_steps: int,
        weight_decay: float,
        val_size: int,
        train_on_inputs: bool,
        max_new_tokens: int,
        num_beams: int,
        gradient_checkpointing: bool,
        max_train_examples: int | None,
        max_eval_examples: int | None,
        dtype: str,
    ) -> None:
        super().__init__(name)
        self.model = model
        self.targets = targets
        unknown = [name for name in eval_sets if name not in EVAL_SETS]
        if unknown or not eval_sets:
            raise InputError(
                f"task.eval_sets: unknown {unknown or 'empty list'}; choose from "
                f"{', '.join(EVAL_SETS)}"
            )
        self.eval_sets = list(eval_sets)
        self.train_file = train_file
        self.batching = TextBatching(
            max_length, batch_size, eval_batch_size, max_train_examples, max_eval_examples
        )
        self.schedule = LinearWarmup(
            lr=_learning_rate(lr, adapter), weight_decay=weight_decay, warmup_steps=warmup_steps
        )
        self.epochs = check_epochs(epochs)
        self.val_size = val_size
        self.train_on_inputs = train_on_inputs
        self.generation = Generation(max_new_tokens, num_beams)
        self.gradient_checkpointing = gradient_checkpointing
        self.dtype = weights_dtype(dtype)
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

        model = load_pretrained(AutoModelForCausalLM, self.model, dtype=self.dtype)
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
        return CommonsenseDataModule(
            data_dir=ctx.data_dir,
            tokenizer=self.tokenizer,
            train_file=self.train_file,
            eval_sets=self.eval_sets,
            batching=self.batching,
            val_size=self.val_size,
            train_on_inputs=self.train_on_inputs,
            seed=ctx.seed,
        )

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> CommonsenseModule:
        # Checked here, not in build_model: a dry run counts a half-precision dense model fine.
        if any(p.requires_grad and p.dtype.itemsize < 4 for p in model.parameters()):
            name = str(self.dtype).removeprefix("torch.")
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
