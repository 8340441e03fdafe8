"""Reading a model that ``trainer=fsdp`` has sharded.

Between steps FSDP leaves each process only its slice of every weight (with
``use_orig_params``, each original parameter is a flat view of that slice, empty on most
processes), so anything that reads a factorised layer's weights after training must gather them
first. conf/trainer/fsdp.yaml makes every factorised layer an FSDP unit of its own; they are
gathered here one at a time, so the memory this takes is one layer's, not the model's.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from sinelr.accounting import rank_diagnostics
from sinelr.layers import LowRankLayer

#: The attribute FSDP inserts in the module path of everything it wraps.
_WRAPPED = "_fsdp_wrapped_module."


def gathered_rank_diagnostics(model: nn.Module) -> dict[str, dict[str, float]]:
    """:func:`~sinelr.accounting.rank_diagnostics` of ``model``, sharded by FSDP or not, under
    the module names of the unwrapped model.

    Under FSDP this is a collective: every process must call it. A factorised layer that is
    not an FSDP unit of its own is left out (its slice cannot be gathered alone).
    """
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, FSDP)]
    if not units:
        return rank_diagnostics(model)
    out: dict[str, dict[str, float]] = {}
    for name, unit in units:
        if isinstance(unit.module, LowRankLayer):
            with FSDP.summon_full_params(unit, recurse=False, writeback=False):
                (stats,) = rank_diagnostics(unit.module).values()
            out[name.replace(_WRAPPED, "")] = stats
    return out
