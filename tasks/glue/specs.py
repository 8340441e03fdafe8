"""The eight GLUE tasks of the paper's Table 1: data, head, metrics and training recipe of each.

One table so that the data layer, the head and the metrics never disagree about a task, and so
that ``task.lr=paper`` / ``task.epochs=paper`` give METHOD.md's values for every ``task.name``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlueSpec:
    """One GLUE task.

    ``directory`` is the task's folder in the original GLUE distribution (``tsv.FORMATS`` keys);
    ``hf_columns`` its text columns in Hugging Face's ``glue`` dataset. ``num_labels=1`` is a
    regression (STS-B). ``metrics`` are computed on the dev set; ``headline`` is the paper's.
    """

    name: str
    directory: str
    hf_columns: tuple[str, ...]
    num_labels: int
    metrics: tuple[str, ...]
    headline: str
    lr: float
    epochs: int
    dev_tsv: str = "dev.tsv"
    hf_dev_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


PAIR = ("sentence1", "sentence2")
# lr and epochs: METHOD.md ("GLUE lr/epochs"). MNLI is scored on its matched dev set.
GLUE: dict[str, GlueSpec] = {
    spec.name: spec
    for spec in [
        GlueSpec("cola", "CoLA", ("sentence",), 2, ("matthews", "acc"), "matthews", 8e-5, 20),
        GlueSpec("sst2", "SST-2", ("sentence",), 2, ("acc",), "acc", 1e-4, 10),
        GlueSpec("mrpc", "MRPC", PAIR, 2, ("acc", "f1"), "acc", 1e-4, 20),
        GlueSpec("qqp", "QQP", ("question1", "question2"), 2, ("acc", "f1"), "acc", 3e-4, 10),
        GlueSpec("stsb", "STS-B", PAIR, 1, ("pearson", "spearman"), "pearson", 1e-4, 20),
        GlueSpec(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            3,
            ("acc",),
            "acc",
            3e-4,
            10,
            dev_tsv="dev_matched.tsv",
            hf_dev_split="validation_matched",
        ),
        GlueSpec("qnli", "QNLI", ("question", "sentence"), 2, ("acc",), "acc", 3e-4, 10),
        GlueSpec("rte", "RTE", PAIR, 2, ("acc",), "acc", 1.2e-3, 50),
    ]
}


def glue_spec(name: str) -> GlueSpec:
    """The task called ``name`` (``task.name``); an error listing the names otherwise."""
    try:
        return GLUE[name]
    except KeyError:
        raise ValueError(
            f"task.name={name!r} is not a GLUE task of the paper; use one of {', '.join(GLUE)}"
        ) from None
