"""The interface every factorised layer implements, and the registry that names them."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar, Self, TypeVar

import torch
from torch import Tensor, nn

from sinelr.layers.config import LowRankConfig


class LowRankLayer(nn.Module, abc.ABC):
    """A linear map ``d_in → d_out`` whose weight is built from rank-``k`` factors.

    Subclasses say how the factors make the weight; this base adds what every variant shares:
    construction from an ``nn.Linear``, the factors' parameter list for accounting, and an
    inference cache for variants whose forward pass has to build the whole weight anyway.
    """

    variant: ClassVar[str]
    #: True where the forward pass needs the whole ``d_out × d_in`` weight because a
    #: non-linearity (the sine, DoRA's norm) destroys the product's structure. Such layers build
    #: it in row blocks while training and cache it while no gradient can flow.
    materialises_weight: ClassVar[bool] = False

    in_features: int
    out_features: int
    rank: int

    def __init__(self) -> None:
        super().__init__()
        self._weight_cache: tuple[tuple, Tensor] | None = None

    @classmethod
    @abc.abstractmethod
    def from_linear(cls, layer: nn.Linear, config: LowRankConfig) -> Self:
        """Replace ``layer``: from-scratch variants take its shape, adapters wrap it."""

    @abc.abstractmethod
    def factor_parameters(self) -> tuple[nn.Parameter, ...]:
        """The low-rank factors (``U, V`` or ``lora_A, lora_B``), counted as ``params.lowrank``."""

    @abc.abstractmethod
    def factorised_weight(self) -> Tensor:
        """The ``d_out × d_in`` matrix the factors make (``W``, or an adapter's ``ΔW``).

        This is what rank diagnostics measure: the thing whose rank the sine is meant to raise.
        """

    @abc.abstractmethod
    def effective_weight(self) -> Tensor:
        """The whole weight the layer applies to its input (bias excluded)."""

    def dense_bias(self) -> Tensor | None:
        """The bias the layer adds (its own; an adapter's is the wrapped layer's)."""
        return getattr(self, "bias", None)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` that computes what this layer computes at inference.

        For export: the factors folded into one dense weight that any library loads without
        sinelr's layers (a merged adapter, or a from-scratch low-rank layer made dense).
        """
        bias = self.dense_bias()
        linear = nn.Linear(self.in_features, self.out_features, bias is not None, device="meta")
        linear.weight = nn.Parameter(self.effective_weight().detach().clone())
        if bias is not None:
            linear.bias = nn.Parameter(bias.detach().clone())
        return linear

    def _cached_weight(self) -> Tensor | None:
        """The effective weight, rebuilt only when a parameter changed; None while training.

        Parameters' version counters move on every in-place update (optimizer steps,
        ``load_state_dict``) and their storage on ``.to()``, so the key catches every change.
        """
        if not self.materialises_weight or self.training or torch.is_grad_enabled():
            return None
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in self.parameters())
        if self._weight_cache is None or self._weight_cache[0] != key:
            self._weight_cache = (key, self.effective_weight())
        return self._weight_cache[1]

    def train(self, mode: bool = True) -> Self:
        self._weight_cache = None
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


LayerT = TypeVar("LayerT", bound=type[LowRankLayer])

LOWRANK_LAYERS: dict[str, type[LowRankLayer]] = {}


def register_lowrank(name: str) -> Callable[[LayerT], LayerT]:
    """Class decorator: make a variant selectable by name (and by ``rank/omega/adapter``)."""

    def decorator(cls: LayerT) -> LayerT:
        if name in LOWRANK_LAYERS:
            raise ValueError(f"low-rank variant {name!r} is already registered")
        cls.variant = name
        LOWRANK_LAYERS[name] = cls
        return cls

    return decorator


def get_lowrank_class(name: str) -> type[LowRankLayer]:
    try:
        return LOWRANK_LAYERS[name]
    except KeyError:
        known = ", ".join(sorted(LOWRANK_LAYERS))
        raise KeyError(f"unknown low-rank variant {name!r}; registered: {known}") from None
