"""Instruction fine-tuning of a causal LM, scored by generation on the eight commonsense sets.

The recipe is DoRA's for LLaMA (which the sine paper follows): AdamW without weight decay, a
linear warm-up over the first ``warmup_steps`` steps and then a linear decay, next-token
cross-entropy on the labelled tokens. Evaluation generates up to ``max_new_tokens`` tokens per
prompt (``num_beams`` = 4 as DoRA's ``commonsense_evaluate.py``, 1 for greedy decoding) and counts
a prediction right when the first answer keyword in it is the example's ``answer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from sinelr.io import atomic_write_json
from sinelr.optim import LinearWarmup
from tasks.commonsense.prompts import extract_answer

PREDICTIONS_DIR = "predictions"


@dataclass(frozen=True)
class Generation:
    """How the test answers are generated: at most ``max_new_tokens`` tokens, by beam search
    over ``num_beams`` beams (1: greedy)."""

    max_new_tokens: int
    num_beams: int


class CommonsenseModule(L.LightningModule):
    """Trains whatever in ``model`` requires a gradient; tests each set in ``eval_sets``."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        eval_sets: Sequence[str],
        schedule: LinearWarmup,
        generation: Generation,
        output_dir: Path,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.eval_sets = eval_sets
        self.schedule = schedule
        self.generation = generation
        self.output_dir = output_dir
        # ModuleDict keys cannot hold "." or start with "_"; the set names do neither.
        self.accuracy = nn.ModuleDict({name: MeanMetric() for name in eval_sets})
        self.predictions: dict[str, list[dict[str, Any]]] = {name: [] for name in eval_sets}

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(**batch).loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), on_step=False, on_epoch=True)

    def generate(self, input_ids: Tensor, attention_mask: Tensor) -> list[str]:
        """The responses to a left-padded batch of prompts, decoded without special tokens."""
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=self.generation.max_new_tokens,
            num_beams=self.generation.num_beams,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.eval_sets[dataloader_idx]
        responses = self.generate(batch["input_ids"], batch["attention_mask"])
        predicted = [extract_answer(name, response) for response in responses]
        correct = [p == a for p, a in zip(predicted, batch["answers"], strict=True)]
        self.accuracy[name].update(torch.tensor(correct, dtype=torch.float32, device=self.device))
        self.predictions[name].extend(
            {"response": r, "pred": p, "answer": a}
            for r, p, a in zip(responses, predicted, batch["answers"], strict=True)
        )

    def on_test_epoch_end(self) -> None:
        """``test/acc/<set>`` for each set and ``test/acc``, their mean (Table 2's Avg.)."""
        accuracies = {name: self.accuracy[name].compute() for name in self.eval_sets}
        for name, value in accuracies.items():
            self.log(f"test/acc/{name}", value)
            self.accuracy[name].reset()
        self.log("test/acc", torch.stack(list(accuracies.values())).mean())
        if self.trainer.is_global_zero:
            for name, rows in self.predictions.items():
                atomic_write_json(self.output_dir / PREDICTIONS_DIR / f"{name}.json", rows)
        self.predictions = {name: [] for name in self.eval_sets}

    def configure_optimizers(self):
        return self.schedule.configure(self.model, int(self.trainer.estimated_stepping_batches))
