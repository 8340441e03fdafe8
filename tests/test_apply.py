"""Injecting factorised layers: target matching, its errors, conv 1×1, and parameter counts."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from sinelr.accounting import count_parameters, rank_diagnostics
from sinelr.apply import Conv1x1, apply_lowrank, match_targets
from sinelr.layers import LoRALinear, LowRankConfig, LowRankLinear, SineLowRankLinear
from tasks.bof.model import OccupancyMLP


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(64, 32)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.pw = nn.Conv2d(32, 48, kernel_size=1)
        self.conv3 = nn.Conv2d(48, 48, kernel_size=3)
        self.head = nn.Linear(32, 3)


def test_regex_and_name_list_targets():
    net = Net()
    assert match_targets(net, r"blocks\.\d+\.fc1") == ["blocks.0.fc1", "blocks.1.fc1"]
    assert match_targets(net, ["fc2", "head"]) == ["blocks.0.fc2", "blocks.1.fc2", "head"]
    assert match_targets(net, ["blocks.1.fc1"]) == ["blocks.1.fc1"]


def test_unmatched_target_lists_similar_names():
    with pytest.raises(ValueError, match=r"'fc3' matches no layer.*Similar layer names: .*fc1"):
        match_targets(Net(), ["fc1", "fc3"])
    with pytest.raises(ValueError, match=r"matches no layer.*named .*fc1, fc2, head, pw"):
        match_targets(Net(), r"mlp\..*")


def test_target_matching_only_non_linear_modules_says_so():
    with pytest.raises(ValueError, match=r"blocks.0.act.*not nn.Linear"):
        match_targets(Net(), r"blocks\.0\.act")
    with pytest.raises(ValueError, match="conv3"):  # a 3×3 conv cannot be factorised
        match_targets(Net(), ["conv3"])


def test_apply_replaces_matches_and_keeps_the_rest():
    net = Net()
    report = apply_lowrank(net, ["fc1", "fc2"], LowRankConfig("sine_lowrank", rank=4, omega=100.0))
    assert sorted(report.replaced) == [
        "blocks.0.fc1",
        "blocks.0.fc2",
        "blocks.1.fc1",
        "blocks.1.fc2",
    ]
    assert isinstance(net.blocks[0].fc1, SineLowRankLinear)
    assert isinstance(net.head, nn.Linear)


def test_rank_at_least_min_dim_stays_dense_and_is_logged(caplog):
    net = Net()
    with caplog.at_level(logging.INFO, logger="sinelr.apply"):
        report = apply_lowrank(net, ["fc1", "head"], LowRankConfig("lowrank", rank=3))
    assert report.kept_dense == {"head": "rank 3 >= min(d_in, d_out) = 3"}
    assert isinstance(net.head, nn.Linear) and isinstance(net.blocks[0].fc1, LowRankLinear)
    assert "head stays dense" in caplog.text


def test_pointwise_conv_is_factorised_and_adapter_shares_its_weight():
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 32, 5, 5)
    before = net.pw(x)
    apply_lowrank(net, ["pw"], LowRankConfig("lora", rank=4))
    assert isinstance(net.pw, Conv1x1) and isinstance(net.pw.linear, LoRALinear)
    torch.testing.assert_close(net.pw(x), before)  # B = 0: the adapted conv starts as the conv
    nn.init.normal_(net.pw.linear.lora_B)
    W = net.pw.linear.effective_weight()
    expected = torch.einsum("oc,bchw->bohw", W, x) + net.pw.linear.base_layer.bias[:, None, None]
    torch.testing.assert_close(net.pw(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("rank", "expected"), [(None, 132_865), (1, 2_817), (2, 3_841), (5, 6_913), (20, 22_273)]
)
def test_occupancy_parameter_counts_equal_the_papers(rank, expected):
    model = OccupancyMLP()
    if rank is not None:
        apply_lowrank(model, r"hidden\.\d+", LowRankConfig("sine_lowrank", rank=rank, omega=1.0))
    counts = count_parameters(model, full_rank_total=132_865)
    assert counts.total == counts.trainable == expected
    assert counts.lowrank == (0 if rank is None else 2 * rank * 512)
    assert counts.compression_rate(adapter=False) == pytest.approx(expected / 132_865)


def test_adapter_counts_trainable_only_in_compression():
    net = Net()
    dense_total = count_parameters(Net(), 0).total
    apply_lowrank(net, ["fc1", "fc2"], LowRankConfig("lora", rank=2))
    counts = count_parameters(net, dense_total)
    lora = 2 * 2 * (2 * (32 + 64))  # two blocks × two layers × r(d_in + d_out)
    assert counts.lowrank == lora
    assert counts.total == dense_total + lora
    # Frozen: the adapted layers' weights and biases; everything else stays trainable.
    frozen = 2 * (32 * 64 + 64 + 64 * 32 + 32)
    assert counts.trainable == dense_total - frozen + lora
    assert counts.compression_rate(adapter=True) == pytest.approx(counts.trainable / dense_total)


def test_rank_diagnostics_report_every_factorised_layer():
    torch.manual_seed(0)
    model = OccupancyMLP()
    apply_lowrank(model, r"hidden\.\d+", LowRankConfig("sine_lowrank", rank=1, omega=200.0))
    diagnostics = rank_diagnostics(model)
    assert set(diagnostics) == {"hidden.0", "hidden.1"}
    for d in diagnostics.values():
        assert d["rank"] == 1 and d["max_rank"] == 256
        assert 1 < d["numerical_rank"] <= 256  # the sine lifted the rank above k = 1
        assert 1 <= d["stable_rank"] <= d["numerical_rank"]
    plain = OccupancyMLP()
    apply_lowrank(plain, r"hidden\.\d+", LowRankConfig("lowrank", rank=1))
    assert all(d["numerical_rank"] == 1 for d in rank_diagnostics(plain).values())
