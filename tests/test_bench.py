"""The memory benchmarks of Tables 6 and 12: their arithmetic, their measurement on a tiny
layer, and the report that sets their JSON beside the paper's numbers."""

from __future__ import annotations

import json

import pytest

from scripts import bench_llama_memory as llama
from scripts import bench_nerf
from scripts.report import main as report_main
from sinelr.report import bench_markdown, paper_bench_tables


def test_linear_fit_reads_a_line_off_and_flags_a_bend():
    slope, intercept, worst = llama.linear_fit([2, 4, 8], [16.0, 26.0, 46.0])
    assert (slope, intercept) == pytest.approx((5.0, 6.0)) and worst == pytest.approx(0.0)
    *_, bent = llama.linear_fit([2, 4, 8], [16.0, 26.0, 60.0])
    # the least-squares line is 7.5·x − 1 (14, 29, 59): worst residual 3, of the largest y 60
    assert bent == pytest.approx(3 / 60)


def test_at_batch_measured_extrapolated_or_proportional():
    rows = [{"batch": b, "saved_bytes": 100 * b + 7} for b in (2, 4, 8)]
    assert llama.at_batch(rows, "saved_bytes", 4) == (407.0, 0.0)
    value, worst = llama.at_batch(rows, "saved_bytes", 16)
    assert value == pytest.approx(1607.0) and worst == pytest.approx(0.0)
    assert llama.at_batch(rows[:1], "saved_bytes", 16)[0] == pytest.approx(207 * 8)


def test_full_model_adds_every_layer_once_and_one_transient():
    total = llama.full_model_bytes(1000, 2, 3, layer_transient=4, head_transient=9, layers=32)
    assert total == 1000 + 32 * (2 + 3) + 9
    with pytest.raises(ValueError, match="non-negative"):
        llama.full_model_bytes(1000, 2, -3, 4, 9, 32)


def _layer_row(method: str, saved: int, peak: int) -> dict:
    row = {"part": "layer", "method": method, "rank": 8, "path": "fused", "batch": 16}
    return row | {"saved_bytes": saved, "peak_bytes": peak, "input_bytes": 5, "trainable": 10}


def test_estimate_keeps_activations_or_only_inputs_with_checkpointing():
    head = {"part": "head", "method": None, "rank": None, "path": "fused", "batch": 16}
    rows = [_layer_row("lora", 100, 130), head | {"saved_bytes": 20, "peak_bytes": 50}]
    (plain,) = llama.estimate(rows, frozen_total=1000, layers=2, batch=16, ckpt=False)
    adapter = 10 * 16  # fp32 parameter, gradient and AdamW's two moments
    assert plain["total_bytes"] == 1000 + 2 * (adapter + 100) + max(130 - 100, 50)
    (ckpt,) = llama.estimate(rows, frozen_total=1000, layers=2, batch=16, ckpt=True)
    assert ckpt["total_bytes"] == 1000 + 2 * (adapter + 5) + 130
    assert llama.report_rows([plain], "fused") == [
        {"method": "lora", "rank": 8, "value": round(plain["total_bytes"] / 2**30, 2)}
    ]


def test_summarise_reports_the_papers_setting_and_keeps_both_estimates(capsys):
    head = {"part": "head", "method": None, "rank": None, "path": "fused", "batch": 16}
    rows = [_layer_row("lora", 100, 130), _layer_row("sine_lora", 200, 260)]
    out = llama.summarise([*rows, head | {"saved_bytes": 20, "peak_bytes": 50}], 16, 256)
    assert {e["checkpointing"] for e in out["estimates"]} == {False, True}
    assert [r["method"] for r in out["report"]["rows"]] == ["lora", "sine_lora"]
    assert "1.000x LoRA" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["sine_lora", "dora"])
def test_a_tiny_llama_layer_is_measured(method):
    """The measurement runs end to end on a tiny layer; what is counted is exact (what the
    resident set says is not, in a test process whose allocator keeps freed memory)."""
    config = llama.llama_config(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=1,
    )
    row = llama.measure(config, "layer", method, 8, batch=2, seq=8, fused=True)
    # q 64x64, k and v 64x32, up 64x128, down 128x64: rank 8 times (d_in + d_out) each
    lora = 8 * (128 + 96 + 96 + 192 + 192)
    assert row["trainable"] == lora + (64 + 32 + 32 + 128 + 64) * (method == "dora")
    # bf16: q and o 64x64, k and v 64x32, gate, up and down 64x128, two norms of 64
    frozen = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64)
    assert row["frozen_bytes"] == frozen
    assert row["input_bytes"] == 2 * 8 * 64 * 2


def test_frozen_model_bytes_counts_llama3_8b():
    # 8,030,261,248 parameters: LLaMA-3-8B with its embeddings and untied lm_head
    assert llama.frozen_model_bytes(llama.llama_config()) == 2 * 8_030_261_248


def test_nerf_memory_summary_divides_sine_by_plain_at_each_rank():
    rows = [
        {"method": "dense", "rank": None, "bf16": False, "peak_bytes": 300 * 2**20},
        {"method": "lowrank", "rank": 5, "bf16": False, "peak_bytes": 200 * 2**20},
        {"method": "sine_lowrank", "rank": 5, "bf16": False, "peak_bytes": 210 * 2**20},
    ]
    summary = bench_nerf.memory_summary(rows)
    assert summary["fp32_sine_vs_plain_k5_peak_mem"] == 1.05
    assert summary["fp32_dense_peak_mib"] == 300.0
    assert bench_nerf.report_rows(rows)[2] == {"method": "sine_lowrank", "rank": 5, "value": 210.0}


def test_report_sets_a_bench_json_beside_the_paper(tmp_path, capsys):
    rows = [
        {"method": "lora", "rank": 8, "value": 20.0},
        {"method": "sine_lora", "rank": 8, "value": 21.0},
    ]
    path = tmp_path / "table6.json"
    path.write_text(json.dumps({"report": {"table": "Table 6", "unit": "GiB", "rows": rows}}))
    assert report_main(["--bench", str(path)]) == 0
    out = capsys.readouterr().out
    # ours 21 / 20; the paper's 72.0 / 54.9 from Table 6
    assert "| sine_lora | 8 | 21.0 | 1.050 | 72.0 | 1.311 |" in out.splitlines()
    assert "| dora | 16 |  |  | 75.9 | 1.375 |" in out  # a paper row we did not measure
    assert len(paper_bench_tables()["Table 12"].rows) == 10


def test_report_rejects_a_json_without_a_report():
    with pytest.raises(ValueError, match="no 'report'"):
        bench_markdown({"rows": []}, "x.json")
    with pytest.raises(ValueError, match="Table 99"):
        bench_markdown({"report": {"table": "Table 99", "unit": "MB", "rows": []}})
