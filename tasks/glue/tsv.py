"""GLUE's TSV files as the benchmark distributes them, read strictly.

Quotes are ordinary characters in GLUE's TSVs (a CSV reader's quoting would swallow lines), so
a line is split on tabs and nothing else. Each task has its own columns; a line with the wrong
number of fields is what a truncated or hand-edited file looks like, and is an error naming the
file and the line rather than a silently dropped example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sinelr.errors import InputError

GET_DATA = (
    "GLUE lives at <data_dir>/glue/<Task>/{train,dev}.tsv in the original distribution format: "
    "download it with GLUE's download_glue_data.py, or set SINELR_DATA to a directory holding it"
)


@dataclass(frozen=True)
class GlueFormat:
    columns: int  # tab-separated fields per line
    header: str | None  # the header line's first field; None: the file has no header (CoLA)
    text: tuple[int, ...]  # the sentence column(s)
    label: int  # the label column
    classes: tuple[str, ...] | None  # label strings, in class-index order; None: a float score


FORMATS: dict[str, GlueFormat] = {
    "CoLA": GlueFormat(4, None, (3,), 1, ("0", "1")),
    "SST-2": GlueFormat(2, "sentence", (0,), 1, ("0", "1")),
    "MRPC": GlueFormat(5, "Quality", (3, 4), 0, ("0", "1")),
    "STS-B": GlueFormat(10, "index", (7, 8), 9, None),
    "RTE": GlueFormat(4, "index", (1, 2), 3, ("entailment", "not_entailment")),
}
STSB_RANGE = (0.0, 5.0)


class TsvError(InputError):
    """A GLUE TSV that does not have its task's format; the message names the file and line."""


@dataclass
class GlueExamples:
    texts: list[tuple[str, ...]]  # one sentence, or a sentence pair
    labels: list[int] | list[float]  # class indices, or STS-B similarity scores


def read_glue_tsv(path: str | Path, task: str) -> GlueExamples:
    """The examples of one GLUE split; ``task`` is the directory name (``RTE``, ``SST-2``, ...)."""
    if task not in FORMATS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[task]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file {path} not found. {GET_DATA}.")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise TsvError(f"{path} is not UTF-8 text ({error}); download it again") from None
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        raise TsvError(f"{path} is empty")
    first = 0
    if fmt.header is not None:
        if lines[0].split("\t")[0] != fmt.header:
            raise TsvError(
                f"{path}: {task}'s files start with a header line beginning {fmt.header!r}; "
                f"this one starts {lines[0][:40]!r}"
            )
        first = 1
    texts: list[tuple[str, ...]] = []
    labels: list = []
    for number, line in enumerate(lines[first:], start=first + 1):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != fmt.columns:
            raise TsvError(
                f"{path}, line {number}: {len(fields)} tab-separated fields where {task} has "
                f"{fmt.columns}; the file is truncated or not in GLUE's format"
            )
        texts.append(tuple(fields[i] for i in fmt.text))
        labels.append(_label(fields[fmt.label], fmt, path, number))
    if not texts:
        raise TsvError(f"{path} has no examples")
    return GlueExamples(texts, labels)


def _label(value: str, fmt: GlueFormat, path: Path, number: int) -> int | float:
    if fmt.classes is not None:
        if value not in fmt.classes:
            raise TsvError(
                f"{path}, line {number}: label {value!r} is not one of {', '.join(fmt.classes)}"
            )
        return fmt.classes.index(value)
    try:
        score = float(value)
    except ValueError:
        score = float("nan")
    low, high = STSB_RANGE
    if not low <= score <= high:
        raise TsvError(f"{path}, line {number}: score {value!r} is not a number in [{low}, {high}]")
    return score
