"""GLUE examples, tokenised once and served as padded batches that a resumed run replays.

Offline the data is GLUE's own TSV distribution under ``<data_dir>/glue/<Task>/``; when that
folder does not exist the task comes from Hugging Face ``datasets`` (downloaded into
``<data_dir>/huggingface``). A batch is ``dataset[indices]`` padded to its longest example, so
:func:`sinelr.data.index_loader` gives the seeded order a run resumed mid-epoch continues exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sinelr.data import index_loader
from tasks.glue.specs import GlueSpec
from tasks.glue.tsv import FORMATS, GET_DATA, GlueExamples, read_glue_tsv

SPLITS = ("train", "dev")
# The subsample (task.max_*_examples) is part of the data, not of the run: the same examples
# for every seed and method, so that runs differ only in what they are meant to compare.
SUBSAMPLE_SEED = 0
#: task.protocol: where validation and test examples come from (:func:`protocol_splits`).
PROTOCOLS = ("dev", "sora")
# SoRA's AbstractTask: its shuffle's seed, and the training examples large tasks hold out.
SORA_SPLIT_SEED = 42
SORA_TRAIN_VALIDATION = 1000


def tsv_dir(spec: GlueSpec, data_dir: Path) -> Path:
    return data_dir / "glue" / spec.directory


def load_examples(spec: GlueSpec, split: str, data_dir: Path) -> GlueExamples:
    """``split`` (train or dev) of ``spec``: from the TSVs if their folder exists, else the hub."""
    if split not in SPLITS:
        raise ValueError(f"GLUE split must be one of {SPLITS}, got {split!r}")
    folder = tsv_dir(spec, data_dir)
    if folder.is_dir():
        if spec.directory not in FORMATS:
            raise ValueError(
                f"{folder} exists, but {spec.name} is read from TSV only for "
                f"{', '.join(FORMATS)}; move {folder} away to load {spec.name} from Hugging Face "
                "datasets instead"
            )
        name = "train.tsv" if split == "train" else spec.dev_tsv
        return read_glue_tsv(folder / name, spec.directory)
    return _load_from_hub(spec, split, data_dir)


def _load_from_hub(spec: GlueSpec, split: str, data_dir: Path) -> GlueExamples:
    import datasets  # only here: offline runs never pay for importing it

    try:
        dataset = datasets.load_dataset("glue", spec.name, cache_dir=str(data_dir / "huggingface"))
    except OSError as error:  # ConnectionError offline, FileNotFoundError for a bad name
        raise FileNotFoundError(
            f"GLUE {spec.name}: no TSV folder at {tsv_dir(spec, data_dir)}, and Hugging Face "
            f"datasets could not load it ({type(error).__name__}: {error}). {GET_DATA}"
        ) from None
    rows = dataset["train" if split == "train" else spec.hf_dev_split]
    texts = list(zip(*(rows[column] for column in spec.hf_columns), strict=True))
    return GlueExamples(texts, list(rows["label"]))


def _take(examples: GlueExamples, rows: Sequence[int]) -> GlueExamples:
    return GlueExamples([examples.texts[i] for i in rows], [examples.labels[i] for i in rows])


def _permutation(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def subsample(examples: GlueExamples, limit: int | None) -> GlueExamples:
    """At most ``limit`` examples (None: all), drawn at random but kept in file order."""
    n = len(examples.texts)
    if limit is None or limit >= n:
        return examples
    if limit < 1:
        raise ValueError(f"a GLUE subsample needs at least one example, got {limit}")
    return _take(examples, sorted(_permutation(n, SUBSAMPLE_SEED)[:limit]))


def protocol_splits(
    spec: GlueSpec, train: GlueExamples, dev: GlueExamples, protocol: str
) -> dict[str, GlueExamples]:
    """The ``train``, ``val`` and ``test`` examples of ``task.protocol``.

    ``dev``: train on the training set; validate and score on the whole dev set (GLUE's test
    labels are not public). ``sora``: SoRA's held-out split, so that choosing the best
    checkpoint never sees the examples it is scored on. Small tasks halve the dev set
    (validation, then test); large ones (``spec.validation_from_train``) validate on 1,000
    training examples and score on the whole dev set. The halves and the held-out examples are
    those of SoRA's fixed shuffle (``torch.randperm`` seeded 42), whatever the run's seed.
    """
    if protocol == "dev":
        return {"train": train, "val": dev, "test": dev}
    if protocol != "sora":
        raise ValueError(f"task.protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if spec.validation_from_train:
        order = _permutation(len(train.texts), SORA_SPLIT_SEED)
        held_out = SORA_TRAIN_VALIDATION
        return {
            "train": _take(train, order[held_out:]),
            "val": _take(train, order[:held_out]),
            "test": dev,
        }
    order = _permutation(len(dev.texts), SORA_SPLIT_SEED)
    half = len(order) // 2
    return {"train": train, "val": _take(dev, order[:half]), "test": _take(dev, order[half:])}


class TokenizedGlue(Dataset):
    """``dataset[indices]`` → a batch dict the model takes, padded (right) to its longest row."""

    def __init__(
        self, features: dict[str, Sequence[Sequence[int]]], labels: Tensor, pad_token_id: int
    ) -> None:
        self.input_ids = [torch.tensor(ids) for ids in features["input_ids"]]
        types = features.get("token_type_ids")
        self.token_type_ids = None if types is None else [torch.tensor(t) for t in types]
        self.labels = labels
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, indices: Tensor) -> dict[str, Tensor]:
        rows = indices.tolist()
        ids = [self.input_ids[i] for i in rows]
        batch = {
            "input_ids": _pad(ids, self.pad_token_id),
            "attention_mask": _pad([torch.ones_like(t) for t in ids], 0),
            "labels": self.labels[indices],
        }
        if self.token_type_ids is not None:
            batch["token_type_ids"] = _pad([self.token_type_ids[i] for i in rows], 0)
        return batch


def _pad(rows: list[Tensor], value: int) -> Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)


def tokenize(examples: GlueExamples, tokenizer, max_length: int, regression: bool) -> TokenizedGlue:
    """Sentences (or pairs) → token ids, truncated to ``max_length`` tokens."""
    columns = list(zip(*examples.texts, strict=True))
    features = tokenizer(*columns, truncation=True, max_length=max_length)
    dtype = torch.float32 if regression else torch.long
    labels = torch.tensor(examples.labels, dtype=dtype)
    return TokenizedGlue(features, labels, tokenizer.pad_token_id)


class GlueDataModule(L.LightningDataModule):
    """Train, validate and test on the splits of ``protocol`` (:func:`protocol_splits`).

    ``max_train_examples`` subsamples the training split, ``max_eval_examples`` each of the
    validation and test splits.
    """

    def __init__(
        self,
        spec: GlueSpec,
        data_dir: Path,
        tokenizer_path: str,
        max_length: int,
        batch_size: int,
        eval_batch_size: int,
        max_train_examples: int | None,
        max_eval_examples: int | None,
        seed: int,
        protocol: str,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.data_dir = data_dir
        self.tokenizer_path = tokenizer_path
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_examples = {
            "train": max_train_examples,
            "val": max_eval_examples,
            "test": max_eval_examples,
        }
        self.seed = seed
        self.protocol = protocol
        self.splits: dict[str, TokenizedGlue] = {}

    def setup(self, stage: str) -> None:
        from transformers import AutoTokenizer

        if self.splits:
            return
        parts = protocol_splits(
            self.spec,
            load_examples(self.spec, "train", self.data_dir),
            load_examples(self.spec, "dev", self.data_dir),
            self.protocol,
        )
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        for split, examples in parts.items():
            examples = subsample(examples, self.max_examples[split])
            self.splits[split] = tokenize(
                examples, tokenizer, self.max_length, self.spec.is_regression
            )

    def train_dataloader(self) -> DataLoader:
        def step() -> int:
            return self.trainer.global_step if self.trainer else 0

        return index_loader(
            self.splits["train"], self.batch_size, shuffle=True, seed=self.seed, global_step=step
        )

    def val_dataloader(self) -> DataLoader:
        return index_loader(self.splits["val"], self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return index_loader(self.splits["test"], self.eval_batch_size, shuffle=False)
