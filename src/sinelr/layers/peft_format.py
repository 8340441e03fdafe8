"""A variant's adapters in Hugging Face PEFT's format: what its class's ``peft_adapter`` takes
and returns (:attr:`sinelr.layers.LowRankLayer.peft_adapter`); :func:`sinelr.export.save_peft`
writes the result. PEFT itself is imported by the writer only: the layers run without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import Tensor

if TYPE_CHECKING:
    from sinelr.layers.base import LowRankLayer
    from sinelr.layers.config import LowRankConfig

#: What precedes a layer's name in PEFT's saved keys (which leave the adapter's name out).
PREFIX = "base_model.model."

#: A layer's ``(A0, B0)`` as the run built them, by layer name: the start that PiSSA moved out
#: of ``W0`` (:attr:`sinelr.export.LoadedRun.start`).
Start = Mapping[str, tuple[Tensor, Tensor]]


class PeftLayers(NamedTuple):
    """What a variant's ``peft_adapter`` writes: one run's adapted layers of that variant."""

    #: The adapted layers by module name.
    layers: Mapping[str, LowRankLayer]
    #: Their config, as the run gave it.
    lowrank: LowRankConfig
    #: PEFT config fields every method shares (``target_modules``, ``modules_to_save``).
    options: dict[str, Any]
    #: Each layer's step-0 factors, for a variant whose start moved part of ``W0`` (PiSSA).
    start: Start | None = None


class PeftAdapter(NamedTuple):
    """The layers as PEFT saves an adapter."""

    #: The config's fields, ``peft_type`` among them (``peft.get_peft_config`` builds it).
    config: dict[str, Any]
    #: Each layer's tensors under PEFT's saved keys.
    tensors: dict[str, Tensor]
    #: True where the method is sinelr.peft's, which PEFT knows once that module is imported.
    sinelr_peft: bool = False
    #: How the saved adapter loads, where not as PEFT's own method of that name: for the user.
    note: str = ""


def peft_tensors(layers: Mapping[str, LowRankLayer], names: Mapping[str, str]) -> dict[str, Tensor]:
    """Each layer's tensors under PEFT's saved keys: ``names`` maps PEFT's name to ours."""
    return {
        f"{PREFIX}{layer_name}.{peft_name}": getattr(layer, ours).detach()
        for layer_name, layer in layers.items()
        for peft_name, ours in names.items()
    }
