"""GLUE examples, tokenised once and served as padded batches that a resumed run replays.

Offline the data is GLUE's own TSV distribution under ``<data_dir>/glue/<Task>/``; when that
folder does not exist the task comes from Hugging Face ``datasets`` (downloaded into
``<data_dir>/huggingface``). A batch is ``dataset[indices]`` padded to its longest example, so
:func:`sinelr.data.index_loader` gives the seeded order a run resumed mid-epoch continues exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sinelr import text
from sinelr.data import IndexDataModule
from sinelr.errors import InputError
from tasks.glue.specs import GlueSpec
from tasks.glue.tsv import FORMATS, GET_DATA, GlueExamples, read_glue_tsv

SPLITS = ("train", "dev")
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
            raise InputError(
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
    """At most ``limit`` examples (None: all), as :func:`sinelr.text.subsample` keeps them."""
    if limit is None or limit >= len(examples.texts):
        return examples
    return _take(examples, text.subsample(len(examples.texts), limit))


def held_out_of_train(spec: GlueSpec, protocol: str) -> int:
    """Training examples ``protocol`` keeps for validation: SoRA's 1,000 on the large tasks.
    The step count (``omega=auto``) needs it before the data is read, the split when it is."""
    return SORA_TRAIN_VALIDATION if protocol == "sora" and spec.validation_from_train else 0


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
        raise InputError(f"task.protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    held_out = held_out_of_train(spec, protocol)
    if held_out:
        order = _permutation(len(train.texts), SORA_SPLIT_SEED)
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

    def __init__(self, features: dict[str, Sequence[Sequence[int]]], labels: Tensor, tokenizer):
        columns = zip(*features.values(), strict=True)
        self.rows = [dict(zip(features, row, strict=True)) for row in columns]
        self.labels = labels
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: Tensor) -> dict[str, Tensor]:
        batch = text.pad_batch(self.tokenizer, [self.rows[i] for i in indices.tolist()])
        batch["labels"] = self.labels[indices]
        return batch


def tokenize(examples: GlueExamples, tokenizer, max_length: int, regression: bool) -> TokenizedGlue:
    """Sentences (or pairs) → token ids, truncated to ``max_length`` tokens."""
    columns = list(zip(*examples.texts, strict=True))
    features = tokenizer(*columns, truncation=True, max_length=max_length)
    dtype = torch.float32 if regression else torch.long
    labels = torch.tensor(examples.labels, dtype=dtype)
    return TokenizedGlue(dict(features), labels, tokenizer)


@dataclass(kw_only=True, eq=False)
class GlueData(text.TextBatching):
    """The ``task.<key>`` settings :class:`GlueDataModule` reads: the text batches and the
    protocol that splits the examples. ``GlueTask`` inherits them, so the config's keys reach
    the data module without being handed on one by one."""

    protocol: str

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(
                f"task.protocol={self.protocol!r}: choose one of {', '.join(PROTOCOLS)}"
            )


class GlueDataModule(IndexDataModule):
    """Train, validate and test on the splits of ``settings.protocol`` (:func:`protocol_splits`).

    ``max_train_examples`` subsamples the training split, ``max_eval_examples`` each of the
    validation and test splits.
    """

    def __init__(
        self, settings: GlueData, spec: GlueSpec, tokenizer_path: str, data_dir: Path, seed: int
    ) -> None:
        super().__init__(seed)
        self.settings = settings
        self.spec = spec
        self.tokenizer_path = tokenizer_path
        self.data_dir = data_dir
        self.max_examples = {
            "train": settings.max_train_examples,
            "val": settings.max_eval_examples,
            "test": settings.max_eval_examples,
        }
        self.splits: dict[str, TokenizedGlue] = {}

    def setup(self, stage: str) -> None:
        from transformers import AutoTokenizer

        if self.splits:
            return
        parts = protocol_splits(
            self.spec,
            load_examples(self.spec, "train", self.data_dir),
            load_examples(self.spec, "dev", self.data_dir),
            self.settings.protocol,
        )
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        for split, examples in parts.items():
            examples = subsample(examples, self.max_examples[split])
            self.splits[split] = tokenize(
                examples, tokenizer, self.settings.max_length, self.spec.is_regression
            )

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.splits["train"], self.settings.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.splits["val"], self.settings.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.splits["test"], self.settings.eval_batch_size)
