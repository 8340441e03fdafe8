"""Objects the CLI tests inject through Hydra overrides, and a run killed mid-training."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from lightning.pytorch.loggers.logger import Logger

ROOT = Path(__file__).resolve().parents[1]


def kill_at_first_checkpoint(overrides: list[str], run_dir: Path, env: dict[str, str]) -> Path:
    """Start run.py, SIGKILL it as soon as it has written a checkpoint; return that checkpoint.

    SIGKILL, not SIGTERM: nothing of the run's own code gets to clean up, as in a crash.
    """
    cmd = [sys.executable, "run.py", *overrides, f"hydra.run.dir={run_dir}"]
    cmd.append("trainer.enable_progress_bar=false")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, **quiet)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    return checkpoint


class BrokenLogger(Logger):
    """A logger whose backend fails on first use, like a wandb server dropping out."""

    @property
    def name(self) -> str:
        return "broken"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        raise ConnectionError("logging backend unreachable")

    def log_metrics(self, metrics, step=None) -> None:
        raise ConnectionError("logging backend unreachable")


# --- a tiny causal LM and commonsense data, written by the tests (no download) -----------------

#: One training/test example per commonsense set: (set, question, answer keyword).
COMMONSENSE_EXAMPLES = [
    ("boolq", "is the sky blue", "true"),
    ("piqa", "how to open a jar solution1 twist solution2 push", "solution1"),
    ("social_i_qa", "what will the cat do answer1 sleep answer2 run answer3 eat", "answer2"),
    ("hellaswag", "a dog runs ending1 fast ending2 slow ending3 away ending4 home", "ending3"),
    ("winogrande", "the mat is small option1 cat option2 dog", "option2"),
    ("ARC-Easy", "what is red answer1 sky answer2 fire answer3 grass answer4 sea", "answer2"),
    ("ARC-Challenge", "which is big answer1 ant answer2 dog answer3 sun answer4 cat", "answer3"),
    ("openbookqa", "a cat is answer1 small answer2 red answer3 big answer4 blue", "answer1"),
]


def commonsense_example(question: str, answer: str) -> dict[str, str]:
    """An example in commonsense_170k's format (instruction, input, output, answer)."""
    return {
        "instruction": f"Please choose the correct answer to the question: {question}",
        "input": "",
        "output": f"the correct answer is {answer}",
        "answer": answer,
    }


def write_commonsense(root: Path, n_train: int = 24) -> Path:
    """``root/commonsense/`` in LLM-Adapters' layout: a training file and the eight test sets."""
    import json

    folder = root / "commonsense"
    train = [commonsense_example(q, a) for _, q, a in COMMONSENSE_EXAMPLES]
    (folder / "dataset").mkdir(parents=True)
    (folder / "commonsense_170k.json").write_text(json.dumps((train * n_train)[:n_train]))
    for name, question, answer in COMMONSENSE_EXAMPLES:
        (folder / "dataset" / name).mkdir()
        tests = [commonsense_example(question, answer)] * 3
        (folder / "dataset" / name / "test.json").write_text(json.dumps(tests))
    return root


def make_tiny_llama(path: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A random LlamaForCausalLM and a word-level tokenizer whose vocabulary covers every word of
    the prompts and :data:`COMMONSENSE_EXAMPLES`, saved as one ``from_pretrained`` directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tasks.commonsense.prompts import prompt

    texts = []
    for _, question, answer in COMMONSENSE_EXAMPLES:
        example = commonsense_example(question, answer)
        texts += [prompt(example) + example["output"], prompt({**example, "input": "context"})]
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in pre.pre_tokenize_str(text)})
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {w: i for i, w in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    tokenizer.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path
