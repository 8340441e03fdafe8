"""The instruction prompt and the answer extraction of LLM-Adapters/DoRA's commonsense benchmark.

Every example (training and test) is ``{instruction, input, output, answer}``: the instruction
spells out the question and its options, and the answer is an option's keyword (``true``,
``solution2``, ``answer3``, ``ending1``, ``option2``). The model is trained to write ``output``
("the correct answer is answer3") after the Alpaca-style prompt, and scored by whether the first
keyword of the right kind in what it generates is ``answer``.

The prompt is the Alpaca template DoRA's ``finetune.py`` and ``commonsense_evaluate.py`` use,
without the source-code indentation their f-strings leak into it (16 spaces before each line,
and not the same in training and evaluation): here one template serves both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: The eight test sets (Table 2's columns), by their folder names in LLM-Adapters' ``dataset/``.
EVAL_SETS = (
    "boolq",
    "piqa",
    "social_i_qa",
    "hellaswag",
    "winogrande",
    "ARC-Easy",
    "ARC-Challenge",
    "openbookqa",
)

#: What an answer looks like in each set: the options' keywords, first match wins.
_KEYWORDS = {
    "boolq": ("true", "false"),
    "piqa": ("solution1", "solution2"),
    "social_i_qa": tuple(f"answer{i}" for i in range(1, 6)),
    "ARC-Easy": tuple(f"answer{i}" for i in range(1, 6)),
    "ARC-Challenge": tuple(f"answer{i}" for i in range(1, 6)),
    "openbookqa": tuple(f"answer{i}" for i in range(1, 6)),
    "hellaswag": tuple(f"ending{i}" for i in range(1, 5)),
    "winogrande": ("option1", "option2"),
}
ANSWER_PATTERNS = {name: re.compile("|".join(words)) for name, words in _KEYWORDS.items()}

_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
_WITHOUT_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def prompt(example: Mapping[str, str]) -> str:
    """The prompt the model answers: everything before the response."""
    template = _WITH_INPUT if example.get("input") else _WITHOUT_INPUT
    return template.format(instruction=example["instruction"], input=example.get("input", ""))


def extract_answer(eval_set: str, generated: str) -> str:
    """The first of ``eval_set``'s answer keywords in ``generated``; "" when there is none.

    As DoRA's evaluation: a plain search, so "answer1" inside "the correct answer is answer1"
    counts, and a response naming two options counts as its first.
    """
    try:
        pattern = ANSWER_PATTERNS[eval_set]
    except KeyError:
        raise ValueError(
            f"unknown commonsense test set {eval_set!r}; the sets are {', '.join(EVAL_SETS)}"
        ) from None
    match = pattern.search(generated.strip())
    return match.group(0) if match else ""
