"""The eight GLUE tasks of the paper's Table 1: data, head, metrics and training recipe of each.

One table so that the data layer, the head and the metrics never disagree about a task, and so
that ``task.lr=paper`` / ``task.epochs=paper`` give the paper's Table 4 values for every
``task.name`` (docs/method.md, "GLUE (Table 1) settings").
"""

from __future__ import annotations

from dataclasses import dataclass

from sinelr.errors import InputError


@dataclass(frozen=True)
class GlueSpec:
    """One GLUE task.

    ``directory`` is the task's folder in the original GLUE distribution (``tsv.FORMATS`` keys);
    ``hf_columns`` its text columns in Hugging Face's ``glue`` dataset. ``num_labels=1`` is a
    regression (STS-B). ``metrics`` are computed on the dev set; ``headline`` is the paper's.

    ``task.protocol=sora`` follows SoRA's ``run_glue.py``: ``selection_metric`` picks the best
    checkpoint (None: the headline), and ``validation_from_train`` says where its validation
    examples come from: 1,000 held out of the training set for the large tasks, half of the dev
    set (the other half scores) for the small ones.
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
    selection_metric: str | None = None
    validation_from_train: bool = False
    #: Examples in GLUE's training set: a run's steps are counted from it before the data is
    #: read (``omega=auto``, docs/omega.md).
    train_size: int | None = None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def selection(self) -> str:
        """The metric whose best validation value picks the checkpoint that is scored."""
        return self.selection_metric or self.headline


PAIR = ("sentence1", "sentence2")
# lr and epochs: the paper's Table 4. MNLI is scored on its matched dev set. SoRA's GLUE code
# selects MRPC's checkpoint by F1 and holds validation examples out of SST-2's, QQP's and QNLI's
# training sets (docs/method.md, "GLUE (Table 1) settings", names the files).
GLUE: dict[str, GlueSpec] = {
    spec.name: spec
    for spec in [
        GlueSpec(
            "cola",
            "CoLA",
            ("sentence",),
            2,
            ("matthews", "acc"),
            "matthews",
            8e-5,
            20,
            train_size=8551,
        ),
        GlueSpec(
            "sst2",
            "SST-2",
            ("sentence",),
            2,
            ("acc",),
            "acc",
            1e-4,
            10,
            validation_from_train=True,
            train_size=67349,
        ),
        GlueSpec(
            "mrpc",
            "MRPC",
            PAIR,
            2,
            ("acc", "f1"),
            "acc",
            1e-4,
            20,
            selection_metric="f1",
            train_size=3668,
        ),
        GlueSpec(
            "qqp",
            "QQP",
            ("question1", "question2"),
            2,
            ("acc", "f1"),
            "acc",
            3e-4,
            10,
            validation_from_train=True,
            train_size=363846,
        ),
        GlueSpec(
            "stsb", "STS-B", PAIR, 1, ("pearson", "spearman"), "pearson", 1e-4, 20, train_size=5749
        ),
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
            train_size=392702,
        ),
        GlueSpec(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            2,
            ("acc",),
            "acc",
            3e-4,
            10,
            validation_from_train=True,
            train_size=104743,
        ),
        GlueSpec("rte", "RTE", PAIR, 2, ("acc",), "acc", 1.2e-3, 50, train_size=2490),
    ]
}


def glue_spec(name: str) -> GlueSpec:
    """The task called ``name`` (``task.name``); an error listing the names otherwise."""
    try:
        return GLUE[name]
    except KeyError:
        raise InputError(
            f"task.name={name!r} is not a GLUE task of the paper; use one of {', '.join(GLUE)}"
        ) from None
