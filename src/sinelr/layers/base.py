"""The interface every factorised layer implements, and the registry that names them.

The registry is the one place that knows the variants: what each is (from scratch or an
adapter, the plain variant a sine twin activates, the PEFT method it equals, the settings it
reads) is declared on its class, and the command line's names, the adapter list, the report's
method order and the PEFT export are all read off it (docs/method.md, "Variants and the
registry").
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sinelr.errors import InputError
from sinelr.layers.config import LowRankConfig
from sinelr.layers.functional import (
    VJP,
    WeightFn,
    WeightVJPFn,
    autocast_off,
    autograd_vjp,
    blockwise_linear,
)
from sinelr.layers.sine import GainRule
from sinelr.results import DENSE, SINE_PREFIX

if TYPE_CHECKING:
    from sinelr.layers.config import AutoOmega

Kind = Literal["scratch", "adapter"]
KINDS: tuple[Kind, ...] = ("scratch", "adapter")
#: The settings of the row-blocked path (:func:`~sinelr.layers.functional.blockwise_linear`):
#: how a weight is computed, not what. Registration adds them to every variant's
#: ``hyperparameters``, so that a benchmark or a test can set them for every variant alike; a
#: variant that never builds its weight (plain LoRA) leaves them unused.
ROW_BLOCK_SETTINGS = frozenset({"fused", "block_elems"})


class LowRankLayer(nn.Module, abc.ABC):
    """A linear map ``d_in → d_out`` whose weight is built from rank-``k`` factors.

    Subclasses say how the factors make the weight; this base adds what every variant shares:
    construction from an ``nn.Linear``, the factors' parameter list for accounting, and an
    inference cache for variants whose forward pass has to build the whole weight anyway.

    A registered variant declares, on its class, what the rest of sinelr needs to know of it
    (checked by :func:`register_lowrank`): :attr:`kind`, :attr:`sine_of`, :attr:`peft_method`
    and :attr:`hyperparameters`, and a sine twin its default gain
    (:attr:`~sinelr.layers.sine.SineActivated.gain_rule`).
    """

    variant: ClassVar[str]
    #: ``"scratch"``: the layer's weight is replaced by factors trained from scratch;
    #: ``"adapter"``: a frozen pretrained layer is adapted (``adapter=`` on the command line).
    kind: ClassVar[Kind]
    #: The registered name of the plain variant this one sine-activates (registered as
    #: ``sine_<plain>``, which ``omega=`` selects); None for a plain variant.
    sine_of: ClassVar[str | None]
    #: The Hugging Face PEFT method this variant equals (``"lora"``, ``"dora"``), None where
    #: none does, as for every sine variant. A method name is declared by the class itself,
    #: never inherited (a subclass computes something else unless it says so); None may be.
    peft_method: ClassVar[str | None]
    #: The :class:`~sinelr.layers.config.LowRankConfig` fields the variant reads besides
    #: ``variant`` and ``rank``. Any other field set away from its default is an error: it
    #: would change nothing but the run's fingerprint. :meth:`from_linear` passes each to the
    #: constructor as a keyword of the same name (:meth:`_kwargs_from_config`).
    hyperparameters: ClassVar[frozenset[str]]
    #: True where the forward pass needs the whole ``d_out × d_in`` weight because a
    #: non-linearity (the sine, DoRA's norm) destroys the product's structure. Such layers build
    #: it in row blocks while training and cache it while no gradient can flow.
    materialises_weight: ClassVar[bool] = False

    in_features: int
    out_features: int
    rank: int
    #: The row-blocked path's settings (:data:`ROW_BLOCK_SETTINGS`).
    fused: bool
    block_elems: int

    def __init__(self) -> None:
        super().__init__()
        self._weight_cache: tuple[tuple, Tensor] | None = None

    @classmethod
    def _kwargs_from_config(cls, config: LowRankConfig) -> dict[str, Any]:
        """The constructor's keyword arguments: ``config``'s value of each of
        :attr:`hyperparameters`, so that what a variant declares it reads is what it is given."""
        return {name: getattr(config, name) for name in sorted(cls.hyperparameters)}

    @classmethod
    @abc.abstractmethod
    def from_linear(cls, layer: nn.Linear, config: LowRankConfig) -> Self:
        """Replace ``layer``: from-scratch variants take its shape, adapters wrap it.

        The one hook that builds a variant from a config (:func:`sinelr.apply.apply_lowrank`
        calls it for every targeted layer); it reads only :attr:`hyperparameters` of ``config``.
        """

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

    # The weight, row block by row block. The tensors it is built from come in as arguments,
    # so that the row-blocked backward can rebuild a block from detached copies.
    @abc.abstractmethod
    def weight_params(self) -> tuple[Tensor, ...]:
        """The tensors the weight is built from, as :meth:`weight_rows` takes them."""

    @abc.abstractmethod
    def weight_rows(self, rows: slice, *params: Tensor) -> Tensor:
        """Rows ``rows`` of :meth:`effective_weight`, from :meth:`weight_params`."""

    def weight_rows_vjp(self, rows: slice, *params: Tensor) -> tuple[Tensor, VJP]:
        """:meth:`weight_rows` and its backward: autograd over the block, unless a variant
        has a cheaper closed form."""
        return autograd_vjp(self.weight_rows)(rows, *params)

    def _materialised_forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """``x W'ᵀ + bias`` for a layer that builds its weight: from the inference cache, in
        one piece (``fused=False``) or in row blocks whose backward rebuilds them."""
        weight = self._cached_weight()
        if weight is None and not self.fused:
            weight = self.effective_weight()
        if weight is not None:
            return F.linear(x, weight, bias)
        return self._blockwise(x, self.weight_rows, self.weight_rows_vjp, bias)

    def _blockwise(
        self, x: Tensor, rows_fn: WeightFn, rows_vjp: WeightVJPFn, bias: Tensor | None = None
    ) -> Tensor:
        return blockwise_linear(
            x, rows_fn, self.weight_params, self.out_features, bias, self.block_elems, rows_vjp
        )

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` that computes what this layer computes at inference.

        For export: the factors folded into one dense weight that any library loads without
        sinelr's layers (a merged adapter, or a from-scratch low-rank layer made dense).
        """
        bias = self.dense_bias()
        linear = nn.Linear(self.in_features, self.out_features, bias is not None, device="meta")
        with self.autocast_off():
            linear.weight = nn.Parameter(self.effective_weight().detach().clone())
        if bias is not None:
            linear.bias = nn.Parameter(bias.detach().clone())
        return linear

    def _cached_weight(self) -> Tensor | None:
        """The effective weight, rebuilt only when a parameter changed; None while training.

        Tensors' version counters move on every in-place update (optimizer steps,
        ``load_state_dict``) and their storage on ``.to()``, so the key catches every change to
        the parameters and to the buffers the weight is built from (LoRA-XS's frozen factors).
        An edit through ``.data`` moves no counter: call ``eval()`` after one, which drops the
        cache, as ``train()`` does.
        """
        if not self.materialises_weight or self.training or torch.is_grad_enabled():
            return None
        tensors = itertools.chain(self.parameters(), self.buffers())
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
        if self._weight_cache is None or self._weight_cache[0] != key:
            # Built as the fused training path builds it, so that a bf16-mixed run's validation
            # scores the weight it learnt. (fused=False trains on the rounded phase.)
            with self.autocast_off():
                self._weight_cache = (key, self.effective_weight())
        return self._weight_cache[1]

    def autocast_off(self) -> torch.autocast:
        """Autocast off on the layer's device, to build its weight exactly (see
        :func:`~sinelr.layers.functional.autocast_off`): for merges, exports and diagnostics."""
        return autocast_off(next(self.parameters()))

    def train(self, mode: bool = True) -> Self:
        self._weight_cache = None
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


LayerT = TypeVar("LayerT", bound=type[LowRankLayer])

#: Every variant by name, in registration order (which the report's order follows).
LOWRANK_LAYERS: dict[str, type[LowRankLayer]] = {}
DECLARATIONS = ("kind", "sine_of", "peft_method", "hyperparameters")


def register_lowrank(name: str) -> Callable[[LayerT], LayerT]:
    """Class decorator: make a variant selectable by name (and by ``rank/omega/adapter``).

    The class's declarations are checked here, so that a variant that would confuse the rest of
    sinelr fails on import, naming the class. A sine twin is registered after its plain variant.
    """

    def decorator(cls: LayerT) -> LayerT:
        if name in LOWRANK_LAYERS:
            raise ValueError(f"low-rank variant {name!r} is already registered")
        _check_declared(name, cls)
        cls.hyperparameters = cls.hyperparameters | ROW_BLOCK_SETTINGS
        _check_consistent(name, cls)
        cls.variant = name
        LOWRANK_LAYERS[name] = cls
        return cls

    return decorator


def _registration_error(name: str, cls: type, problem: str) -> ValueError:
    return ValueError(f"cannot register {cls.__qualname__} as {name!r}: {problem}")


def _check_declared(name: str, cls: type) -> None:
    """Raise, naming ``cls``, unless it is a layer that makes every declaration."""
    if not (isinstance(cls, type) and issubclass(cls, LowRankLayer)):
        raise _registration_error(name, cls, "a variant subclasses sinelr.layers.LowRankLayer")
    missing = [d for d in DECLARATIONS if not hasattr(cls, d)]
    if missing:
        problem = f"it does not declare {', '.join(missing)} (see LowRankLayer)"
        raise _registration_error(name, cls, problem)
    if not isinstance(cls.hyperparameters, frozenset):
        problem = f"hyperparameters must be a frozenset, got {cls.hyperparameters!r}"
        raise _registration_error(name, cls, problem)


def _check_consistent(name: str, cls: type[LowRankLayer]) -> None:
    """Raise, naming ``cls``, if its declarations contradict each other or its name."""

    def fail(problem: str) -> ValueError:
        return _registration_error(name, cls, problem)

    if cls.kind not in KINDS:
        raise fail(f"kind must be one of {', '.join(KINDS)}, got {cls.kind!r}")
    settings = {f.name for f in fields(LowRankConfig)} - {"variant", "rank"}
    if cls.hyperparameters - settings:
        raise fail(
            f"hyperparameters must be LowRankConfig fields ({', '.join(sorted(settings))}), "
            f"got {', '.join(sorted(cls.hyperparameters - settings))}"
        )
    if cls.peft_method is not None and "peft_method" not in vars(cls):
        raise fail(
            f"it inherits peft_method={cls.peft_method!r}; a subclass computes something else, "
            "so declare peft_method on the class itself (None where PEFT has no equal)"
        )
    plain_name = name.removeprefix(SINE_PREFIX) if name.startswith(SINE_PREFIX) else None
    if cls.sine_of != plain_name:
        expected = "None (a plain variant)" if plain_name is None else repr(plain_name)
        raise fail(
            f"sine_of is {cls.sine_of!r} but must be {expected}: the sine twin of X is "
            f"registered as {SINE_PREFIX}X, and only it"
        )
    if cls.sine_of is None:
        if "omega" in cls.hyperparameters:
            raise fail("a plain variant reads no omega: omega= selects its sine twin")
        return
    plain = LOWRANK_LAYERS.get(cls.sine_of)
    if plain is None or plain.sine_of is not None:
        raise fail(f"{cls.sine_of!r} is not a registered plain variant; register it first")
    if cls.kind != plain.kind:
        raise fail(f"kind {cls.kind!r} differs from {cls.sine_of}'s {plain.kind!r}")
    if cls.peft_method is not None:
        raise fail("a sine variant equals no PEFT method: declare peft_method = None")
    missing = (plain.hyperparameters | {"omega"}) - cls.hyperparameters
    if missing:
        raise fail(
            f"a sine twin reads omega and every setting {cls.sine_of} reads; "
            f"hyperparameters lacks {', '.join(sorted(missing))}"
        )
    # On the class itself, as peft_method: what the sine stands for is the twin's own fact.
    if not isinstance(vars(cls).get("gain_rule"), GainRule):
        raise fail(
            "a sine twin declares its default gain on the class itself: gain_rule = "
            "GainRule.FAN_IN (the sine is a weight, or is added to one: g = sqrt(d_in)) or "
            "GainRule.UNIT (a relative change multiplied into W0: g = 1); see "
            "sinelr.layers.sine.GainRule"
        )


def unregister_lowrank(name: str) -> None:
    """Remove a variant from the registry: for tests that register one of their own.

    A plain variant goes after its sine twin, so that no twin is left without its plain one.
    """
    get_lowrank_class(name)  # an unknown name is an error, as everywhere
    twin = sine_twin(name)
    if twin is not None:
        raise ValueError(f"unregister {twin!r} before {name!r}, the plain variant it activates")
    del LOWRANK_LAYERS[name]


def get_lowrank_class(name: str) -> type[LowRankLayer]:
    """The class registered as ``name``. An unknown name is a ``ValueError``, as every bad
    setting is, so that the driver records its one line (a ``KeyError`` would quote it)."""
    try:
        return LOWRANK_LAYERS[name]
    except KeyError:
        known = ", ".join(sorted(LOWRANK_LAYERS))
        raise InputError(f"unknown low-rank variant {name!r}; registered: {known}") from None


def plain_variants(kind: Kind) -> list[str]:
    """The registered plain variants of ``kind``, in registration order: the values of
    ``adapter=`` (adapters) or ``lowrank.variant=`` (from scratch)."""
    return [n for n, c in LOWRANK_LAYERS.items() if c.kind == kind and c.sine_of is None]


def sine_twin(plain: str) -> str | None:
    """The registered name of ``plain``'s sine twin, None if it has none."""
    twin = SINE_PREFIX + plain
    return twin if twin in LOWRANK_LAYERS else None


def method_names() -> list[str]:
    """results.json's ``method`` values in the report's order: the dense baseline, then each
    plain variant followed by its sine twin, from-scratch variants before adapters, each kind
    in registration order."""
    names = [DENSE]
    for plain in (name for kind in KINDS for name in plain_variants(kind)):
        twin = sine_twin(plain)
        names += [plain] if twin is None else [plain, twin]
    return names


def variant_name(
    rank: int | None,
    omega: float | AutoOmega | None,
    adapter: str | None = None,
    scratch: str | None = None,
) -> str:
    """The registry name that the command line's ``rank``/``omega``/``adapter`` and
    ``lowrank.variant`` (``scratch``) select; results.json's ``method``.

    ``rank=None`` is the dense baseline. Otherwise the plain variant is ``adapter`` (a
    fine-tuning task's), ``scratch`` or ``lowrank`` (a from-scratch task's), and a number or
    ``auto`` in ``omega`` selects its sine twin.
    """
    if adapter is not None and adapter not in plain_variants("adapter"):
        choices = ", ".join(plain_variants("adapter"))
        raise InputError(f"adapter must be one of {choices} or null, got {adapter!r}")
    if scratch is not None and scratch not in plain_variants("scratch"):
        choices = ", ".join(plain_variants("scratch"))
        hint = " (adapters are chosen with adapter=)" if scratch in LOWRANK_LAYERS else ""
        raise InputError(
            f"lowrank.variant must be a plain from-scratch variant, one of {choices}, "
            f"or null, got {scratch!r}{hint}"
        )
    if adapter is not None and scratch is not None:
        raise InputError(
            f"adapter={adapter} and lowrank.variant={scratch} both given: adapter= chooses the "
            "adapter of a fine-tuning task, lowrank.variant= the layers of a from-scratch one"
        )
    if rank is None:
        return DENSE
    plain = adapter or scratch or "lowrank"
    if omega is None:
        return plain
    twin = sine_twin(plain)
    if twin is None:
        raise InputError(
            f"omega={omega} asks for the sine twin of {plain}, but no {SINE_PREFIX}{plain} is "
            "registered; pass omega=null for the plain variant"
        )
    return twin
