"""Put factorised layers into an existing network, the way PEFT injects adapters.

``targets`` name the layers: a regex is matched against each module's full name
(``re.fullmatch``), a list of names matches a module whose name equals an entry or ends with
``"." + entry``. Only ``nn.Linear`` and 1×1 ``nn.Conv2d`` can be factorised.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from sinelr.errors import InputError
from sinelr.layers import LowRankConfig, LowRankLayer, get_lowrank_class
from sinelr.omega import config_for_layer

log = logging.getLogger(__name__)

Targets = str | Sequence[str]


class Conv1x1(nn.Module):
    """A 1×1 ``Conv2d`` as a linear layer over channels, so any variant can replace it."""

    def __init__(self, linear: LowRankLayer) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)


@dataclass
class ApplyReport:
    """Which layers were factorised, and which matched but stayed dense (and why)."""

    replaced: dict[str, str] = field(default_factory=dict)
    kept_dense: dict[str, str] = field(default_factory=dict)


def _is_factorisable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding in ((0, 0), "valid")
        and module.groups == 1
    )


def _as_linear(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` a layer computes; a 1×1 conv's weight is shared, not copied."""
    if isinstance(module, nn.Linear):
        return module
    assert isinstance(module, nn.Conv2d)
    # On the meta device: no memory and no draws from the RNG for a weight about to be replaced.
    linear = nn.Linear(module.in_channels, module.out_channels, module.bias is not None, "meta")
    linear.weight = nn.Parameter(module.weight.detach().flatten(1), module.weight.requires_grad)
    if module.bias is not None:
        linear.bias = module.bias
    return linear


def _no_match_error(target: str, model: nn.Module, candidates: list[str], why: str) -> InputError:
    leaves = sorted({name.rsplit(".", 1)[-1] for name in candidates})
    similar = difflib.get_close_matches(target, candidates + leaves, n=5, cutoff=0.5)
    lines = [f"target {target!r} {why} in {type(model).__name__}."]
    if similar:
        lines.append(f"Similar layer names: {', '.join(similar)}.")
    lines.append(
        "Factorisable layers (nn.Linear, 1x1 nn.Conv2d) are named "
        + (", ".join(leaves) if leaves else "nothing: the model has none")
        + "; targets are a regex matched against full names, or a list of names/suffixes."
    )
    return InputError(" ".join(lines))


def match_targets(model: nn.Module, targets: Targets) -> list[str]:
    """Full names of the factorisable modules ``targets`` selects; an error if it selects none.

    Each entry of a list must match something: a typo in one name should not silently leave
    that layer dense while the others are factorised.
    """
    modules = dict(model.named_modules())
    candidates = [name for name, m in modules.items() if name and _is_factorisable(m)]
    if isinstance(targets, str):
        pattern = re.compile(targets)
        matched = [name for name in candidates if pattern.fullmatch(name)]
        if not matched:
            others = [n for n in modules if n and pattern.fullmatch(n)]
            why = (
                f"matches only {', '.join(others[:3])} (not nn.Linear or 1x1 nn.Conv2d)"
                if others
                else "matches no layer"
            )
            raise _no_match_error(targets, model, candidates, why)
        return matched
    if not targets:
        raise InputError("targets is empty: name at least one layer to factorise")
    matched: list[str] = []
    for target in targets:
        hits = [n for n in candidates if n == target or n.endswith("." + target)]
        if not hits:
            raise _no_match_error(target, model, candidates, "matches no layer")
        matched.extend(h for h in hits if h not in matched)
    return matched


def apply_lowrank(model: nn.Module, targets: Targets, config: LowRankConfig) -> ApplyReport:
    """Replace the layers ``targets`` selects by ``config.variant``, in place.

    A layer whose ``min(d_in, d_out)`` is at most the rank stays dense: a rank-k factorisation
    of it would have at least as many parameters as the layer (the paper's counts assume this).
    A rank that leaves every selected layer dense is an error, raised before any change: the
    run would be the dense network labelled as a factorised one. ``omega=auto`` is resolved
    here, per layer, from its shape (:func:`sinelr.omega.config_for_layer`).
    """
    cls = get_lowrank_class(config.variant)
    selected = {
        name: _as_linear(model.get_submodule(name)) for name in match_targets(model, targets)
    }
    full_ranks = {name: min(lin.in_features, lin.out_features) for name, lin in selected.items()}
    if all(config.rank >= full_rank for full_rank in full_ranks.values()):
        largest = max(full_ranks.values()) - 1
        fix = (
            f"the largest rank that factorises one is {largest}"
            if largest
            else "no rank factorises a layer of width 1: target others (task.targets)"
        )
        raise InputError(
            f"rank={config.rank} factorises nothing: a layer stays dense unless the rank is below "
            f"its min(d_in, d_out), at most {largest + 1} among the targeted layers; {fix}. "
            "rank=null is the dense baseline."
        )
    report = ApplyReport()
    for name, linear in selected.items():
        if config.rank >= full_ranks[name]:
            reason = f"rank {config.rank} >= min(d_in, d_out) = {full_ranks[name]}"
            report.kept_dense[name] = reason
            log.info("%s stays dense: %s", name, reason)
            continue
        conv = linear is not model.get_submodule(name)
        # The name the layer will have in the model, as results.json and checkpoints record it.
        layer_name = f"{name}.linear" if conv else name
        layer_config = config_for_layer(config, layer_name, linear.out_features, linear.in_features)
        layer = cls.from_linear(linear, layer_config)
        model.set_submodule(name, Conv1x1(layer) if conv else layer)
        report.replaced[name] = config.variant
    log.info(
        "%s: %d layer(s) factorised at rank %d, %d kept dense",
        config.variant,
        len(report.replaced),
        config.rank,
        len(report.kept_dense),
    )
    return report


def densify(model: nn.Module) -> list[str]:
    """Replace every factorised layer by the dense layer it computes, in place; return their names.

    The inverse of :func:`apply_lowrank` with the trained factors folded in: adapters merge
    into their base layer, from-scratch factors become one weight, a factorised 1×1 convolution
    becomes an ``nn.Conv2d`` again. The result is a plain network of the original architecture.
    """
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or any(name.startswith(done + ".") for done in replaced):
            continue
        if isinstance(module, Conv1x1):
            linear = module.linear.to_linear()
            conv = nn.Conv2d(
                linear.in_features,
                linear.out_features,
                1,
                bias=linear.bias is not None,
                device="meta",
            )
            conv.weight = nn.Parameter(linear.weight.detach()[:, :, None, None])
            conv.bias = linear.bias
            model.set_submodule(name, conv)
        elif isinstance(module, LowRankLayer):
            model.set_submodule(name, module.to_linear())
        else:
            continue
        replaced.append(name)
    return replaced
