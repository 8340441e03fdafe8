"""Task commonsense: prompts, answer extraction, label masking, data errors, adapters, runs.

Everything runs offline on a tiny random Llama (hidden 64, 2 layers) and a word-level tokenizer
that the tests build and save (tests/helpers.py), with a few JSON examples the tests write.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf
from torch import nn
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from sinelr.accounting import count_parameters, rank_diagnostics
from sinelr.driver import full_rank_total
from sinelr.layers import LowRankConfig, LowRankLayer
from sinelr.optim import LinearWarmup
from sinelr.run_config import lowrank_config
from sinelr.sharding import gathered_rank_diagnostics
from sinelr.text import IGNORE_INDEX as IGNORE
from tasks.commonsense import CommonsenseTask
from tasks.commonsense.data import (
    CommonsenseData,
    CommonsenseDataModule,
    PromptBatches,
    TrainBatches,
    encode_for_training,
    load_tokenizer,
    read_examples,
)
from tasks.commonsense.module import CommonsenseModule, Generation
from tasks.commonsense.prompts import EVAL_SETS, extract_answer, prompt
from tests.helpers import (
    COMMONSENSE_EXAMPLES,
    commonsense_example,
    compose_config,
    dry_run,
    make_tiny_llama,
    write_commonsense,
)
from tests.test_cli import assert_contract

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")
OFFLINE = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tokenizer(tiny_llama):
    return load_tokenizer(str(tiny_llama))


def commonsense_config(*overrides: str):
    return compose_config("task=commonsense", *overrides)


def make_task(*overrides: str) -> CommonsenseTask:
    cfg = commonsense_config(*overrides)
    try:
        return instantiate(cfg.task, _recursive_=False, _convert_="all")
    except InstantiationException as error:
        raise error.__cause__ from None  # the task's own error, as run.py reports it


# --- prompts and answers ------------------------------------------------------------------------


def test_prompt_is_the_alpaca_template():
    example = {"instruction": "Q?", "input": "", "output": "A"}
    assert prompt(example) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nQ?\n\n### Response:\n"
    )
    with_input = prompt({**example, "input": "ctx"})
    assert with_input.startswith("Below is an instruction that describes a task, paired with an")
    assert with_input.endswith("### Instruction:\nQ?\n\n### Input:\nctx\n\n### Response:\n")


@pytest.mark.parametrize(
    ("eval_set", "generated", "expected"),
    [
        ("boolq", "the correct answer is false", "false"),
        ("boolq", "True", ""),  # case-sensitive, as DoRA's regex
        ("piqa", "the correct answer is solution2", "solution2"),
        ("social_i_qa", "answer3 or answer1", "answer3"),  # the first one wins
        ("ARC-Easy", "the correct answer is answer4", "answer4"),
        ("ARC-Challenge", " answer5 ", "answer5"),
        ("openbookqa", "no idea", ""),
        ("hellaswag", "the correct answer is ending4", "ending4"),
        ("hellaswag", "the correct answer is answer1", ""),  # another set's keyword
        ("winogrande", "the correct answer is option1", "option1"),
    ],
)
def test_answer_extraction_follows_doras_patterns(eval_set, generated, expected):
    assert extract_answer(eval_set, generated) == expected


def test_every_eval_set_has_a_pattern_and_an_unknown_set_is_an_error():
    assert len(EVAL_SETS) == 8
    for name, _, answer in COMMONSENSE_EXAMPLES:
        assert extract_answer(name, f"the correct answer is {answer}") == answer
    with pytest.raises(ValueError, match=r"unknown commonsense test set 'siqa'.*social_i_qa"):
        extract_answer("siqa", "answer1")


# --- tokenisation, masking, batches -------------------------------------------------------------


def test_loss_covers_the_response_and_eos_only(tokenizer):
    example = commonsense_example("is the sky blue", "true")
    ids, labels = encode_for_training(example, tokenizer, 256, train_on_inputs=False)
    n_prompt = len(tokenizer(prompt(example))["input_ids"])
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    response = tokenizer.decode(labels[n_prompt:-1])
    assert response == example["output"]
    _, all_labels = encode_for_training(example, tokenizer, 256, train_on_inputs=True)
    assert all_labels == ids


def test_truncated_examples_get_no_eos(tokenizer):
    example = commonsense_example("is the sky blue", "true")
    ids, labels = encode_for_training(example, tokenizer, 10, train_on_inputs=False)
    assert len(ids) == 10 and tokenizer.eos_token_id not in ids
    assert labels == [IGNORE] * 10  # all prompt: the data module drops such examples


def test_training_batches_pad_right_and_prompts_pad_left(tokenizer):
    train = TrainBatches([([5, 6, 7], [IGNORE, 6, 7]), ([5], [5])], tokenizer)
    batch = train[torch.tensor([1, 0])]
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[5, pad, pad], [5, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch["labels"].tolist() == [[5, IGNORE, IGNORE], [IGNORE, 6, 7]]
    examples = [commonsense_example("is the sky blue", "true"), commonsense_example("a", "false")]
    prompts = PromptBatches(examples, tokenizer)
    batch = prompts[torch.tensor([0, 1])]
    short, long = (len(tokenizer(prompt(e))["input_ids"]) for e in reversed(examples))
    assert batch["input_ids"].shape == (2, long)
    assert batch["attention_mask"][1].tolist() == [0] * (long - short) + [1] * short
    assert (
        batch["input_ids"][:, -1].tolist() == [tokenizer(prompt(examples[0]))["input_ids"][-1]] * 2
    )
    assert batch["answers"] == ["true", "false"]


# --- data files ---------------------------------------------------------------------------------


def test_a_missing_file_names_the_path_and_the_layout(tmp_path, tokenizer):
    settings = CommonsenseData(
        max_length=64, batch_size=4, eval_batch_size=4, train_file="commonsense_170k.json",
        eval_sets=["boolq"], val_size=0, train_on_inputs=False,
    )  # fmt: skip
    data = CommonsenseDataModule(settings, tokenizer, tmp_path, seed=0)
    with pytest.raises(FileNotFoundError) as error:
        data.setup("fit")
    message = str(error.value)
    assert str(tmp_path / "commonsense" / "commonsense_170k.json") in message
    assert "dataset/<set>/test.json" in message and "LLM-Adapters" in message
    with pytest.raises(FileNotFoundError, match=r"commonsense/dataset/boolq/test.json"):
        data.setup("test")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("[{", "not valid JSON"),
        ("{}", "non-empty JSON list"),
        ('[{"instruction": "q", "input": "", "output": "a"}, {"instruction": "q"}]', "example 1"),
    ],
)
def test_malformed_files_are_errors_naming_the_file(tmp_path, content, error):
    path = tmp_path / "train.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=error) as raised:
        read_examples(path, ("instruction", "output"))
    assert str(path) in str(raised.value)


def test_validation_is_held_out_of_the_training_file(tmp_path, tokenizer):
    write_commonsense(tmp_path, n_train=20)
    settings = CommonsenseData(
        max_length=256, batch_size=4, eval_batch_size=4, max_eval_examples=2,
        train_file="commonsense_170k.json",
        eval_sets=list(EVAL_SETS), val_size=5, train_on_inputs=False,
    )  # fmt: skip
    data = CommonsenseDataModule(settings, tokenizer, tmp_path, seed=0)
    data.setup("fit")
    data.setup("test")
    assert (len(data.train), len(data.val)) == (15, 5)
    assert list(data.tests) == list(EVAL_SETS)
    assert all(len(t) == 2 for t in data.tests.values())  # max_eval_examples per set


# --- model and configuration --------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["lora", "sine_lora", "dora", "sine_dora"])
def test_adapters_on_qkv_up_down_are_all_that_trains(tiny_llama, variant):
    task = make_task(
        f"task.model={tiny_llama}", "adapter=lora", "task.gradient_checkpointing=false"
    )
    rank = 2
    omega = 100.0 if variant.startswith("sine") else None
    model = task.build_model(LowRankConfig(variant, rank, omega=omega))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layers_of = {n.split(".")[-2] for n in trainable}
    assert layers_of == set(TARGETS)
    kinds = {n.rsplit(".", 1)[-1] for n in trainable}
    assert kinds == (
        {"lora_A", "lora_B", "magnitude"} if "dora" in variant else {"lora_A", "lora_B"}
    )
    # hidden 64, 2 key/value heads of 16, MLP 128: q 64→64, k and v 64→32, up 64→128, down 128→64
    per_layer = rank * ((64 + 64) + 2 * (64 + 32) + 2 * (64 + 128))
    counts = count_parameters(model, full_rank_total(task))
    assert counts.lowrank == 2 * per_layer
    magnitudes = 2 * (64 + 32 + 32 + 128 + 64) if "dora" in variant else 0
    assert counts.trainable == counts.lowrank + magnitudes
    assert counts.total == counts.full_rank_total + counts.trainable


def test_activation_checkpointing_gives_the_same_gradients(tiny_llama, tokenizer):
    """The paper preset recomputes activations in backward (non-reentrant checkpointing); the
    row-blocked sine DoRA must give the gradients it gives without."""
    grads = []
    for checkpointing in (False, True):
        task = make_task(
            f"task.model={tiny_llama}",
            "adapter=dora",
            f"task.gradient_checkpointing={checkpointing}",
        )
        torch.manual_seed(0)
        model = task.build_model(LowRankConfig("sine_dora", 2, omega=100.0))
        model.eval()  # no dropout: both passes compute the same function
        model.model.layers[0].self_attn.q_proj.lora_B.data.normal_(0, 0.5)
        example = commonsense_example("is the sky blue", "true")
        ids, labels = encode_for_training(example, tokenizer, 256, train_on_inputs=False)
        model.train(checkpointing)  # transformers checkpoints only in training mode
        model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_a_bf16_base_trains_fp32_adapters_and_follows_the_fp32_model(tiny_llama, tokenizer):
    """``task.dtype=bfloat16`` (the paper preset: LLaMA-3-8B's 16 GB instead of 32 GB) keeps the
    base frozen in bf16 and the adapters in fp32; its loss is the fp32 model's to bf16 rounding
    (2^-8 relative per weight and activation, a few of them along 2 layers: 2 % allows ~5)."""
    example = commonsense_example("is the sky blue", "true")
    ids, labels = encode_for_training(example, tokenizer, 256, train_on_inputs=False)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        task = make_task(f"task.model={tiny_llama}", "adapter=lora", f"task.dtype={dtype}")
        torch.manual_seed(0)
        model = task.build_model(LowRankConfig("sine_dora", 2, omega=100.0)).eval()
        model.model.layers[0].self_attn.q_proj.lora_B.data.normal_(0, 0.5)
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert frozen == {getattr(torch, dtype)}
        assert {p.dtype for p in trainable} == {torch.float32}
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        assert all(p.grad is not None and p.grad.isfinite().all() for p in trainable)
        losses[dtype] = loss.item()
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)
    half = make_task(f"task.model={tiny_llama}", "adapter=lora", "task.dtype=bfloat16")
    with pytest.raises(ValueError, match=r"task\.dtype=bfloat16 would train them in half"):
        half.lightning_module(half.build_model(None), None)


def test_layers_from_scratch_are_refused(tiny_llama):
    task = make_task(f"task.model={tiny_llama}", "adapter=lora")
    with pytest.raises(ValueError, match="adapter=lora or adapter=dora"):
        task.build_model(LowRankConfig("lowrank", 2))


def test_an_unavailable_model_says_how_to_point_at_one(tmp_path):
    task = make_task(f"task.model={tmp_path / 'absent'}", "adapter=lora")
    with pytest.raises(FileNotFoundError, match="local directory saved with save_pretrained"):
        task.build_model(None)


def test_paper_learning_rate_follows_the_adapter():
    assert make_task("adapter=lora").schedule.lr == 1e-4
    assert make_task("adapter=dora").schedule.lr == 6e-5
    assert make_task("adapter=dora", "task.lr=3e-4").schedule.lr == 3e-4
    with pytest.raises(ValueError, match=r"task\.lr must be a finite number above 0, got inf"):
        make_task("adapter=lora", "task.lr=inf")
    with pytest.raises(ValueError, match="needs adapter=lora or adapter=dora"):
        make_task("adapter=null")  # no adapter: full fine-tuning has no paper rate


def test_the_dense_baseline_drops_the_default_adapter(tmp_path):
    """rank=null fine-tunes every weight: the task's default LoRA must not pick its rate."""
    from sinelr.driver import run

    cfg = commonsense_config("rank=null", "dry_run=true")
    with pytest.raises(ValueError, match="needs adapter=lora or adapter=dora"):
        run(cfg, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["adapter"] is None


def test_the_default_adapter_is_lora():
    """rank=K alone is a LoRA run, as for every fine-tuning task; adapter= still chooses."""
    assert commonsense_config().adapter == "lora"
    assert make_task().schedule.lr == 1e-4  # LoRA's paper rate
    assert commonsense_config("adapter=dora").adapter == "dora"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("task.eval_sets=[boolq,siqa]", "unknown.*siqa"),
        ("task.epochs=0", "task.epochs"),
        ("task.dtype=fp8", "task.dtype='fp8': choose one of float32, bfloat16, float16"),
    ],
)
def test_bad_settings_are_errors(override, match):
    with pytest.raises(ValueError, match=match):
        make_task("adapter=lora", override)


def test_paper_preset_is_doras_recipe():
    cfg = commonsense_config("adapter=dora", "rank=16", "preset=paper")
    task = instantiate(cfg.task, _recursive_=False, _convert_="all")
    assert task.model == "meta-llama/Meta-Llama-3-8B" and task.targets == list(TARGETS)
    assert (task.schedule.lr, task.epochs) == (6e-5, 3)
    assert (task.batch_size, task.max_length) == (16, 256)
    assert (task.schedule.warmup_steps, task.val_size, task.generation.num_beams) == (100, 120, 4)
    assert task.weights_dtype == torch.bfloat16
    lowrank = OmegaConf.to_container(cfg.lowrank, resolve=True)
    assert (lowrank["alpha"], lowrank["dropout"]) == (32, 0.05)  # alpha = 2·rank


@pytest.mark.parametrize(
    ("experiment", "adapter", "lr", "ranks"),
    [("table2_commonsense", "lora", 1e-4, "4,8,16,32"), ("table7_dora", "dora", 6e-5, "8,16,32")],
)
def test_experiments_sweep_the_papers_grid(experiment, adapter, lr, ranks):
    cfg = OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml")
    assert (cfg.adapter, cfg.task.lr, cfg.task.epochs) == (adapter, lr, 3)
    assert cfg.hydra.sweeper.params.rank == ranks
    assert cfg.hydra.sweeper.params.omega == "null,paper"


# --- generation ---------------------------------------------------------------------------------


def test_batched_generation_equals_one_prompt_at_a_time(tiny_llama, tokenizer, tmp_path):
    """Left padding must not change a response: the attention mask and positions skip it."""
    task = make_task(f"task.model={tiny_llama}", "adapter=lora")
    model = task.build_model(LowRankConfig("sine_dora", 2, omega=100.0)).eval()
    for layer in model.modules():
        if hasattr(layer, "lora_B"):
            torch.nn.init.normal_(layer.lora_B, std=0.5)
    module = CommonsenseModule(
        model, tokenizer, ["boolq"], LinearWarmup(1e-3, 0.0), Generation(6, 1), tmp_path
    )
    examples = [commonsense_example(q, a) for _, q, a in COMMONSENSE_EXAMPLES[:4]]
    prompts = PromptBatches(examples, tokenizer)
    with torch.inference_mode():
        batched = module.generate(**_inputs(prompts[torch.arange(4)]))
        single = [module.generate(**_inputs(prompts[torch.tensor([i])]))[0] for i in range(4)]
    assert batched == single
    assert len({len(row["input_ids"]) for row in prompts.rows}) > 1  # the batch was padded


def _inputs(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


# --- runs through run.py ------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_run_trains_and_scores_every_set(run_cli, tiny_llama, tmp_path):
    """A tiny Llama learns the response template in a few epochs; the per-set accuracies in
    results.json are those of the predictions written beside it, and test/acc is their mean."""
    data = write_commonsense(tmp_path / "data")
    run = run_cli(
        "task=commonsense", f"task.model={tiny_llama}", "adapter=lora", "rank=4", "omega=200",
        "preset=smoke", "task.lr=1e-2", "task.epochs=8", "task.max_train_examples=null",
        data_dir=data, env=OFFLINE,
    )  # fmt: skip
    assert run.returncode == 0, run.output
    results = run.results
    assert_contract(results)
    assert (results["status"], results["method"], results["task"]) == (
        "completed", "sine_lora", "commonsense",
    )  # fmt: skip
    assert results["steps"] == 8 * math.ceil((24 - 2) / 4)  # 2 held out, batch 4
    metrics = results["metrics"]
    per_set = [metrics[f"test/acc/{name}"] for name in EVAL_SETS]
    assert results["metric"]["name"] == "test/acc"
    assert metrics["test/acc"] == pytest.approx(sum(per_set) / 8)
    responses = []
    for name in EVAL_SETS:
        rows = json.loads((run.run_dir / "predictions" / f"{name}.json").read_text())
        assert len(rows) == 3
        right = sum(extract_answer(name, r["response"]) == r["answer"] for r in rows)
        assert metrics[f"test/acc/{name}"] == pytest.approx(right / 3)
        responses += [r["response"] for r in rows]
    # Trained on the response only, the model has learnt its template.
    assert sum(r.startswith("the correct answer is") for r in responses) >= len(responses) // 2
    assert set(results["diagnostics"]["rank"]) == {
        f"model.layers.{i}.{part}.{m}"
        for i in range(2)
        for part, names in [("self_attn", TARGETS[:3]), ("mlp", TARGETS[3:])]
        for m in names
    }


@pytest.mark.parametrize(
    ("adapter", "omega", "trainable"),
    # LLaMA-3-8B: 32 layers of q 4096→4096, k and v 4096→1024, up 4096→14336, down 14336→4096;
    # DoRA adds a magnitude per output row (the paper's 14.9M for DoRA k=8).
    [("lora", 600.0, 14_155_776), ("dora", 300.0, 14_942_208)],
)
def test_llama3_8b_dry_run_counts_offline_on_meta(tmp_path, monkeypatch, adapter, omega, trainable):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = dry_run(
        tmp_path, "task=commonsense", f"adapter={adapter}", "rank=8", "omega=paper",
        "preset=paper",
    )  # fmt: skip
    assert_contract(results)
    assert (results["status"], results["method"], results["omega"]) == (
        "dry_run", f"sine_{adapter}", omega,
    )  # fmt: skip
    params = results["params"]
    assert params["lowrank"] == 32 * 8 * (2 * 4096 + 2 * (4096 + 1024) + 2 * (4096 + 14336))
    assert params["trainable"] == trainable
    assert params["full_rank_total"] == 8_030_261_248  # LLaMA-3-8B
    assert params["total"] == params["full_rank_total"] + trainable


@pytest.mark.slow
def test_missing_data_fails_the_run_naming_the_file(run_cli, tiny_llama, tmp_path):
    run = run_cli(
        "task=commonsense", f"task.model={tiny_llama}", "adapter=lora", "rank=2", "preset=smoke",
        data_dir=tmp_path / "empty", env=OFFLINE,
    )  # fmt: skip
    assert run.returncode != 0
    assert str(tmp_path / "empty" / "commonsense" / "commonsense_170k.json") in run.output
    assert run.results["status"] == "failed"


# --- trainer=fsdp -------------------------------------------------------------------------------
# Lightning 2.6 refuses FSDPStrategy on the CPU (and on the CPU, saving its full checkpoint
# crashes: Lightning issue #21804), so no run.py run here can use it. What can run here is
# torch's FSDP itself, set up as trainer=fsdp's strategy sets it up, on two CPU processes.


#: Sine DoRA: its forward reads the frozen base weight, which FSDP must gather with the factors.
FSDP_RUN = ["adapter=dora", "rank=2", "omega=100", "trainer=fsdp"]


def fsdp_config(model_dir: Path | str):
    return commonsense_config(
        f"task.model={model_dir}", *FSDP_RUN, "task.gradient_checkpointing=false"
    )


def test_fsdp_trainer_wraps_each_adapted_layer_and_keeps_fp32_factors(tiny_llama, tmp_path):
    cfg = fsdp_config(tiny_llama)
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True  # frozen and trainable in one unit
    precision = strategy.mixed_precision_config  # what FSDPStrategy gives FSDP
    assert (precision.param_dtype, precision.reduce_dtype, precision.buffer_dtype) == (None,) * 3
    assert cfg.trainer.strategy.state_dict_type == "full"  # one last.ckpt, as every run's
    task = instantiate(cfg.task, _recursive_=False, _convert_="all")
    model = task.build_model(lowrank_config(cfg, task.name))
    policy = strategy.kwargs["auto_wrap_policy"]
    units = {name for name, module in model.named_modules() if policy(module, recurse=False)}
    expected = {
        name
        for name, module in model.named_modules()
        if isinstance(module, LowRankLayer | LlamaDecoderLayer)
    }
    assert units == expected and len(units) == 2 * (len(TARGETS) + 1)
    # A dry run builds no trainer. Lightning refuses FSDP on the CPU: once it does not, a
    # run.py test on two CPU processes (as trainer=ddp's) can replace the torch-level one below.
    results = dry_run(tmp_path, "task=commonsense", f"task.model={tiny_llama}", *FSDP_RUN)
    assert results["status"] == "dry_run"
    with pytest.raises(InstantiationException, match="requires a GPU accelerator"):
        instantiate(cfg.trainer, accelerator="cpu")


class _Holder(nn.Module):
    """What FSDP wraps under Lightning: the LightningModule, which holds the model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, labels=ids).loss


def _unwrapped(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "")


def _fsdp_worker(rank: int, model_dir: str, rendezvous: str) -> None:
    """One of two processes: the tiny Llama with sine DoRA, wrapped as FSDPStrategy wraps it,
    against the same model unwrapped. Same batch on both processes,
    so the averaged gradient is the unwrapped model's."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        cfg = fsdp_config(model_dir)
        task = instantiate(cfg.task, _recursive_=False, _convert_="all")
        torch.manual_seed(0)
        model = task.build_model(lowrank_config(cfg, task.name))
        with torch.no_grad():  # factors away from B = 0, where ΔW = 0 has rank 0
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.1 * torch.randn_like(param))
        reference = copy.deepcopy(model)
        ids = torch.arange(4, 20).reshape(2, 8)
        want_loss = _Holder(reference)(ids)
        want_loss.backward()

        strategy = instantiate(cfg.trainer.strategy)
        wrapped = FSDP(
            _Holder(model),
            device_id=torch.device("cpu"),  # Lightning passes none on the CPU, which FSDP refuses
            cpu_offload=strategy.cpu_offload,
            mixed_precision=strategy.mixed_precision_config,
            sharding_strategy=strategy.sharding_strategy,
            **strategy.kwargs,
        )
        loss = wrapped(ids)
        loss.backward()
        # The same fp32 operations, and the mean of two equal gradients: default tolerances.
        torch.testing.assert_close(loss, want_loss)
        with FSDP.summon_full_params(wrapped, with_grads=True):
            grads = {
                _unwrapped(name): param.grad.clone()
                for name, param in model.named_parameters()
                if param.requires_grad
            }
        want = {name: p.grad for name, p in reference.named_parameters() if p.requires_grad}
        assert grads.keys() == want.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, want[name], msg=name)
        # The driver's rank diagnostics read the sharded model (each process holds slices).
        assert gathered_rank_diagnostics(model) == rank_diagnostics(reference)
        # last.ckpt's state_dict: the full weights under the unwrapped model's names, as any
        # run's (resume and scripts/merge_adapters.py read it). offload_to_cpu, Lightning's
        # setting, is for GPU shards (on the CPU it crashes: Lightning issue #21804).
        full = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, full):
            state = wrapped.state_dict()
        want_state = _Holder(reference).state_dict()
        assert state.keys() == want_state.keys()
        for name, value in state.items():
            torch.testing.assert_close(value, want_state[name], msg=name)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_matches_the_unsharded_model(tiny_llama, tmp_path):
    torch.multiprocessing.spawn(
        _fsdp_worker, args=(str(tiny_llama), str(tmp_path / "rendezvous")), nprocs=2
    )
