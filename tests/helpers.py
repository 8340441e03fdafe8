"""What the tests share: the config ``run.py`` would run, runs in-process, the kill-and-resume
check, and objects the CLI tests inject through Hydra overrides."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers.logger import Logger
from omegaconf import DictConfig

import sinelr.driver
from sinelr.checkpoint import CHECKPOINT_DIR, read_checkpoint
from sinelr.resolvers import register_resolvers
from sinelr.results import RESULTS_FILE

ROOT = Path(__file__).resolve().parents[1]


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config ``run.py <overrides>`` runs, composed in-process; ``hydra`` adds ``cfg.hydra``.

    Composition raises what the command line prints (an unknown key, a missing option), so a
    check of the config needs no process, and no process's seconds of imports.
    """
    register_resolvers()  # as the driver does before it reads a config
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def run_in_process(output_dir: Path, *overrides: str) -> dict[str, Any]:
    """results.json of ``run.py <overrides>``, run in-process in ``output_dir``; the driver's
    error propagates (after it has written results.json, as on the command line).

    The driver itself runs, so parameter counts, errors on bad input and what results.json
    records are the command line's, without the seconds a process takes to import torch and
    Lightning; what only a process shows (the exit status, the printed line) is test_cli.py's
    part. As under ``run_cli``, data and cache default to ``output_dir/no-data`` and
    ``output_dir/cache`` (a run never reads or fills the user's) and no progress bar is drawn;
    ``paths.output_dir``, Hydra's run directory on the command line, is ``output_dir``.
    """
    defaults = [  # quoted: a directory may be named like an override (``rank=5``)
        f"paths.output_dir='{output_dir}'",
        f"paths.data_dir='{output_dir / 'no-data'}'",
        f"paths.cache_dir='{output_dir / 'cache'}'",
        "trainer.enable_progress_bar=false",
    ]
    sinelr.driver.run(compose_config(*defaults, *overrides), output_dir)
    return json.loads((output_dir / RESULTS_FILE).read_text())


def dry_run(output_dir: Path, *overrides: str) -> dict[str, Any]:
    """results.json of ``run.py <overrides> dry_run=true``, in-process: the model is built on
    the meta device and counted, nothing is read or trained."""
    return run_in_process(output_dir, *overrides, "dry_run=true")


def kill_at_first_checkpoint(command: list[str], run_dir: Path, **popen: Any) -> int:
    """Start ``command`` (a run.py run in ``run_dir``), SIGKILL it as soon as it has written a
    checkpoint; return its exit status.

    SIGKILL, not SIGTERM: nothing of the run's own code gets to clean up, as in a crash.
    """
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    checkpoint = run_dir / CHECKPOINT_DIR / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), f"no checkpoint in {run_dir} before the run ended or timed out"
    assert not (run_dir / RESULTS_FILE).exists(), "the run finished before it could be killed"
    return proc.returncode


def assert_resumes_to_the_uninterrupted_result(
    run_cli: Callable[..., Any],
    overrides: Sequence[str],
    *,
    steps: int,
    kill_before_step: int,
    metrics: Sequence[str] | None = None,
    continue_with: str = "resume=true",
    **options: Any,
) -> None:
    """Run ``overrides`` uninterrupted, again killed at its first checkpoint, and resume the
    killed run: it must end where the uninterrupted one did, ``steps`` steps and the same
    ``metrics`` (all of them when None), bit for bit.

    Batches are a function of (seed, epoch, step) and the RNGs are in the checkpoint, so a
    resumed run trains on exactly the batches, with exactly the dropout masks, of one that was
    never interrupted. ``kill_before_step`` bounds the step the kill hit (mid-epoch where the
    epoch is longer); ``continue_with`` is the override that continues the killed run;
    ``options`` go to every ``run_cli`` call (``data_dir``, ``env``).
    """
    reference = run_cli(*overrides, **options)
    assert reference.returncode == 0, reference.output
    killed = run_cli(*overrides, kill_at_first_checkpoint=True, **options)
    checkpoint = killed.run_dir / CHECKPOINT_DIR / "last.ckpt"
    killed_state = read_checkpoint(checkpoint)
    assert 0 < killed_state["global_step"] < kill_before_step

    resumed = run_cli(*overrides, continue_with, run_dir=killed.run_dir, **options)
    assert resumed.returncode == 0, resumed.output
    assert resumed.results["resumed_from"] == str(checkpoint)
    assert resumed.results["steps"] == reference.results["steps"] == steps
    assert resumed.results["metric"] == reference.results["metric"]
    if metrics is None:
        assert resumed.results["metrics"] == reference.results["metrics"]
    for key in metrics or ():
        assert resumed.results["metrics"][key] == reference.results["metrics"][key], key
    # The resumed run's log continues the killed one's: every step's row, none twice, the same
    # values. Except one: Lightning does not checkpoint the running mean of an epoch's training
    # metrics, so the interrupted epoch's mean (logged at its last step) covers only the steps
    # after the resume.
    resumed_log, reference_log = metrics_log(resumed.run_dir), metrics_log(reference.run_dir)
    interrupted = str(killed_state["epoch"])
    epoch_end = max(int(row["step"]) for row in reference_log if row["epoch"] == interrupted)

    def comparable(row: dict[str, str]) -> dict[str, str]:
        if (row["epoch"], int(row["step"])) != (interrupted, epoch_end):
            return row
        return {key: value for key, value in row.items() if not key.startswith("train/")}

    assert [comparable(row) for row in resumed_log] == [comparable(row) for row in reference_log]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error of ``a`` against ``b`` in the Frobenius norm."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def metrics_log(run_dir: Path) -> list[dict[str, str]]:
    """A run's ``csv/metrics.csv`` rows, in order (a row has every column of the file)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


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
