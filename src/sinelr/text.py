"""Text batches the fine-tuning tasks share: one subsample rule, and padding by the tokenizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sinelr.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: A subsample (``task.max_*_examples``) is part of the data, not of the run: the same examples
#: for every seed and method, so that runs differ only in what they are meant to compare.
SUBSAMPLE_SEED = 0
#: The label cross-entropy skips: prompt and padding tokens of a causal LM's targets.
IGNORE_INDEX = -100


@dataclass(kw_only=True, eq=False)
class TextBatching:
    """How a fine-tuning task's examples become batches: the token budget per example, the
    batch sizes, and the subsamples (None: every example) that smoke and mini runs take."""

    max_length: int
    batch_size: int
    eval_batch_size: int
    max_train_examples: int | None = None
    max_eval_examples: int | None = None


def subsample(n: int, limit: int | None) -> list[int]:
    """The rows of ``n`` kept by ``limit``: all (None), else ``limit`` drawn at random with
    :data:`SUBSAMPLE_SEED` and kept in file order."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise InputError(f"a subsample needs at least one example, got {limit}")
    generator = torch.Generator().manual_seed(SUBSAMPLE_SEED)
    return sorted(torch.randperm(n, generator=generator)[:limit].tolist())


def pad_batch(
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Sequence[int]]],
    side: str = "right",
) -> dict[str, Tensor]:
    """Tokenised rows as one batch, padded to the longest row on ``side``.

    The tokenizer pads what the model takes (its own pad id and token-type id) and writes the
    attention mask; per-token ``labels``, if the rows have them, are padded with
    :data:`IGNORE_INDEX` on the same side.
    """
    inputs = [{k: v for k, v in row.items() if k != "labels"} for row in rows]
    batch = dict(tokenizer.pad(inputs, padding=True, padding_side=side, return_tensors="pt"))
    if rows and "labels" in rows[0]:
        width = batch["input_ids"].shape[1]
        fill = [[IGNORE_INDEX] * (width - len(row["labels"])) for row in rows]
        batch["labels"] = torch.tensor(
            [
                [*pad, *row["labels"]] if side == "left" else [*row["labels"], *pad]
                for pad, row in zip(fill, rows, strict=True)
            ]
        )
    return batch
