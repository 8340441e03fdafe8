"""commonsense_170k for training, the eight commonsense test sets for evaluation.

The layout is LLM-Adapters' (which DoRA's README points to), under ``<data_dir>/commonsense/``::

    commonsense_170k.json            # training: a JSON list of {instruction, input, output, answer}
    dataset/<set>/test.json          # boolq, piqa, social_i_qa, hellaswag, winogrande,
                                     # ARC-Easy, ARC-Challenge, openbookqa; the same format

Training batches are ``prompt + output + EOS`` (at most ``max_length`` tokens), right-padded,
with the loss on the response only (``train_on_inputs=False``: prompt and padding labels are
-100); test batches are the whole prompts, left-padded so that generation continues every row
from its last token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sinelr.data import IndexDataModule, hold_out
from sinelr.errors import InputError
from sinelr.text import IGNORE_INDEX, TextBatching, pad_batch, subsample
from tasks.commonsense.prompts import EVAL_SETS, prompt

log = logging.getLogger(__name__)

GET_DATA = (
    "Get commonsense_170k.json from LLM-Adapters' ft-training_set/ and the test sets from its "
    "dataset/ folder (github.com/AGI-Edgerunners/LLM-Adapters), and point paths.data_dir (or "
    "SINELR_DATA) at the folder that holds commonsense/."
)


def commonsense_dir(data_dir: Path) -> Path:
    return data_dir / "commonsense"


def eval_file(data_dir: Path, eval_set: str) -> Path:
    return commonsense_dir(data_dir) / "dataset" / eval_set / "test.json"


def read_examples(path: Path, fields: Sequence[str]) -> list[dict[str, Any]]:
    """A JSON list of objects, each with ``fields``; an error naming the file (and entry) if not."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Expected under <data_dir>/commonsense/: commonsense_170k.json and "
            f"dataset/<set>/test.json for {', '.join(EVAL_SETS)}. {GET_DATA}"
        )
    try:
        examples = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error}); is it truncated?") from None
    if not isinstance(examples, list) or not examples:
        raise InputError(f"{path} must hold a non-empty JSON list of examples")
    for i, example in enumerate(examples):
        missing = [f for f in fields if not isinstance(example, dict) or f not in example]
        if missing:
            raise InputError(
                f"{path}, example {i}: no {', '.join(missing)}; every example is an object with "
                "instruction, input, output and answer"
            )
    return examples


def split_validation(examples: list[dict], size: int) -> tuple[list[dict], list[dict]]:
    """``size`` held-out examples for the validation loss (DoRA holds out 120) and the rest."""
    kept, held = hold_out(len(examples), size, "task.val_size")
    return [examples[i] for i in kept.tolist()], [examples[i] for i in held.tolist()]


def encode_for_training(
    example: dict, tokenizer, max_length: int, train_on_inputs: bool
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response (+ EOS if it fits) and their labels.

    As DoRA's ``finetune.py``: the whole text is tokenised at once (a tokenizer may merge across
    the prompt/response boundary), and the prompt's share is the length of the prompt tokenised
    on its own.
    """
    text = prompt(example) + example["output"]
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    if ids[-1] != tokenizer.eos_token_id and len(ids) < max_length:
        ids = [*ids, tokenizer.eos_token_id]
    labels = list(ids)
    if not train_on_inputs:
        prompt_ids = tokenizer(prompt(example), truncation=True, max_length=max_length)
        n_prompt = len(prompt_ids["input_ids"])
        labels[:n_prompt] = [IGNORE_INDEX] * min(n_prompt, len(labels))
    return ids, labels


class TrainBatches(Dataset):
    """``dataset[indices]`` → ``input_ids``, ``attention_mask``, ``labels``, right-padded."""

    def __init__(self, rows: list[tuple[list[int], list[int]]], tokenizer) -> None:
        self.rows = [{"input_ids": ids, "labels": labels} for ids, labels in rows]
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: Tensor) -> dict[str, Tensor]:
        return pad_batch(self.tokenizer, [self.rows[i] for i in indices.tolist()])


class PromptBatches(Dataset):
    """``dataset[indices]`` → left-padded prompts and their examples' ``answer`` strings."""

    def __init__(self, examples: list[dict], tokenizer) -> None:
        # Not truncated (as DoRA's evaluation): a cut prompt would lose its question or options.
        encoded = tokenizer([prompt(example) for example in examples])["input_ids"]
        self.rows = [{"input_ids": ids} for ids in encoded]
        self.answers = [str(example["answer"]) for example in examples]
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: Tensor) -> dict[str, Any]:
        rows = indices.tolist()
        batch: dict[str, Any] = pad_batch(self.tokenizer, [self.rows[i] for i in rows], "left")
        batch["answers"] = [self.answers[i] for i in rows]
        return batch


def load_tokenizer(path: str):
    """``path``'s tokenizer, with a padding token (LLaMA's has none: EOS pads; masks hide it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise InputError(f"the tokenizer of {path} has no EOS token to end the responses with")
    return tokenizer


@dataclass(kw_only=True, eq=False)
class CommonsenseData(TextBatching):
    """The ``task.<key>`` settings :class:`CommonsenseDataModule` reads: the text batches, which
    files, and what is held out and trained on. ``CommonsenseTask`` inherits them, so the
    config's keys reach the data module without being handed on one by one."""

    train_file: str
    eval_sets: Sequence[str]
    val_size: int
    train_on_inputs: bool

    def __post_init__(self) -> None:
        unknown = [name for name in self.eval_sets if name not in EVAL_SETS]
        if unknown or not self.eval_sets:
            raise InputError(
                f"task.eval_sets: unknown {unknown or 'empty list'}; choose from "
                f"{', '.join(EVAL_SETS)}"
            )


class CommonsenseDataModule(IndexDataModule):
    """Train on commonsense_170k less ``val_size`` held-out examples; test on each eval set."""

    def __init__(self, settings: CommonsenseData, tokenizer, data_dir: Path, seed: int) -> None:
        super().__init__(seed)
        self.settings = settings
        self.tokenizer = tokenizer
        self.data_dir = data_dir
        self.train: TrainBatches | None = None
        self.val: TrainBatches | None = None
        self.tests: dict[str, PromptBatches] = {}

    def _encode(self, examples: list[dict]) -> TrainBatches:
        settings = self.settings
        rows = [
            encode_for_training(e, self.tokenizer, settings.max_length, settings.train_on_inputs)
            for e in examples
        ]
        kept = [row for row in rows if any(label != IGNORE_INDEX for label in row[1])]
        if len(kept) < len(rows):
            log.warning(
                "%d of %d examples dropped: no response token within task.max_length=%d",
                len(rows) - len(kept),
                len(rows),
                settings.max_length,
            )
        if not kept:
            raise InputError(
                "no example has a response within "
                f"task.max_length={settings.max_length} tokens; raise task.max_length"
            )
        return TrainBatches(kept, self.tokenizer)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train is None:
            path = commonsense_dir(self.data_dir) / self.settings.train_file
            examples = read_examples(path, ("instruction", "output"))
            examples = [
                examples[i] for i in subsample(len(examples), self.settings.max_train_examples)
            ]
            train, val = split_validation(examples, self.settings.val_size)
            self.train = self._encode(train)
            self.val = self._encode(val) if val else None
        if stage == "test" and not self.tests:
            for name in self.settings.eval_sets:
                examples = read_examples(eval_file(self.data_dir, name), ("instruction", "answer"))
                examples = [
                    examples[i] for i in subsample(len(examples), self.settings.max_eval_examples)
                ]
                self.tests[name] = PromptBatches(examples, self.tokenizer)

    def train_dataloader(self) -> DataLoader:
        assert self.train is not None
        return self.train_loader(self.train, self.settings.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None:
            return []
        return self.eval_loader(self.val, self.settings.eval_batch_size)

    def test_dataloader(self) -> list[DataLoader]:
        return [
            self.eval_loader(self.tests[name], self.settings.eval_batch_size)
            for name in self.settings.eval_sets
        ]
