"""What a factorised layer is: the variant and its hyper-parameters, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sinelr.layers.functional import DEFAULT_BLOCK_ELEMS

ADAPTERS = ("lora", "dora")


def variant_name(rank: int | None, omega: float | None, adapter: str | None = None) -> str:
    """The registry name that the command line's ``rank``/``omega``/``adapter`` select.

    ``rank=None`` is the dense baseline; ``omega=None`` the plain variant; a sine variant is the
    plain one's name with a ``sine_`` prefix, so results.json's ``method`` is this name.
    """
    if adapter is not None and adapter not in ADAPTERS:
        raise ValueError(f"adapter must be one of {ADAPTERS} or null, got {adapter!r}")
    if rank is None:
        return "dense"
    base = adapter or "lowrank"
    return f"sine_{base}" if omega is not None else base


@dataclass(frozen=True)
class LowRankConfig:
    """Hyper-parameters of one factorised layer.

    ``gain=None`` means ``sqrt(d_in)``, the authors' choice; ``alpha=None`` means ``alpha = rank``
    (adapter scaling 1). ``fused`` selects the memory-lean sine path; ``fused=False`` is plain
    autograd, kept to compare against. ``detach_norm`` (DoRA and sine DoRA only) treats the row
    norms ``||W0 + ΔW||`` as a constant in the backward pass, as DoRA's paper (§4.3), PEFT and
    the sine paper's own code do; ``False`` differentiates through them (the exact gradient).
    The forward pass, and so ``merge``, is the same either way.
    """

    variant: str
    rank: int
    omega: float | None = None
    gain: float | None = None
    alpha: float | None = None
    dropout: float = 0.0
    fused: bool = True
    block_elems: int = DEFAULT_BLOCK_ELEMS
    detach_norm: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(
                f"rank must be a positive integer, got {self.rank!r}; "
                "use rank=null for the full-rank (dense) baseline"
            )
        if self.omega is not None and not (math.isfinite(self.omega) and self.omega > 0):
            raise ValueError(
                f"omega must be a positive number, got {self.omega!r}; "
                "use omega=null for the plain low-rank variant"
            )
        if self.gain is not None and not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"gain must be a positive number or null, got {self.gain!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.detach_norm, bool):
            raise ValueError(
                f"detach_norm must be true or false, got {self.detach_norm!r} "
                "(true: DoRA's norm as a constant in the backward pass, false: exact gradient)"
            )
        if self.block_elems < 1:
            raise ValueError(f"block_elems must be positive, got {self.block_elems!r}")
