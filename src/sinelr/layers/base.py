"""The interface every factorised layer implements, and the registration that names them.

A variant's class is its only description: what it is (from scratch or an adapter, the PEFT
method it equals, the settings it reads, whether ``omega=auto`` has a rule for it, how it is
written for PEFT) is declared on the class, a sine twin's is derived from its plain variant
when it registers, and the command line's names, the adapter list, the report's method order
and the PEFT export are all read off it (docs/method.md, "Variants and the registry").
"""

from __future__ import annotations

import abc
import inspect
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
from sinelr.layers.registry import LOWRANK_LAYERS, get_lowrank_class
from sinelr.layers.sine import SINE_SETTINGS, GainRule, SineActivated
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
    construction from an ``nn.Linear``, the forward pass's choice of path, the factors'
    parameter list for accounting, and an inference cache for variants whose forward pass has
    to build the whole weight anyway.

    A plain variant declares :attr:`kind` and :attr:`hyperparameters` (inherited from its
    parent class where they hold), and :attr:`peft_method`, :attr:`omega_auto` and
    :meth:`peft_adapter` where they apply: those three hold only for the class that declares
    them, since a subclass computes something else. A sine twin declares its default gain
    (:attr:`~sinelr.layers.sine.SineActivated.gain_rule`), what it computes and, where PEFT
    loads it, its own :meth:`peft_adapter`; the rest follows from its plain variant
    (:func:`register_lowrank`).
    """

    variant: ClassVar[str]
    #: ``"scratch"``: the layer's weight is replaced by factors trained from scratch;
    #: ``"adapter"``: a frozen pretrained layer is adapted (``adapter=`` on the command line).
    kind: ClassVar[Kind]
    #: The registered name of the plain variant this one sine-activates; None for a plain
    #: variant. Set by registration, from the name: the twin of ``X`` is ``sine_X``.
    sine_of: ClassVar[str | None] = None
    #: The Hugging Face PEFT method this variant equals (``"lora"``, ``"dora"``), None where
    #: none does, as for every sine twin.
    peft_method: ClassVar[str | None] = None
    #: The :class:`~sinelr.layers.config.LowRankConfig` fields the variant reads besides
    #: ``variant`` and ``rank``. Any other field set away from its default is an error: it
    #: would change nothing but the run's fingerprint. :meth:`from_linear` passes each to the
    #: constructor as a keyword of the same name (:meth:`_kwargs_from_config`), so registration
    #: checks that the constructor takes each.
    hyperparameters: ClassVar[frozenset[str]]
    #: Whether ``omega=auto`` has a rule for this variant's sine twin: true where the factors
    #: start as :func:`sinelr.omega.factor_stds` says (drawn like an ``nn.Linear`` weight, an
    #: adapter's ``B`` at zero), the start the rule takes its scale from. A start from
    #: ``W0``'s SVD (PiSSA, LoRA-XS) or from scaled random projections (VeRA) has another scale.
    omega_auto: ClassVar[bool] = False
    #: How the variant is written for PEFT: a classmethod ``peft_adapter(PeftLayers) ->
    #: PeftAdapter`` (:mod:`sinelr.layers.peft_format`) that gives a run's layers as PEFT saves
    #: them; None where PEFT, with sinelr.peft, has no method that computes what it does.
    peft_adapter: ClassVar[Callable[..., Any] | None] = None
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

    def forward(self, x: Tensor) -> Tensor:
        """``x W'ᵀ + bias``, by the one path the variant's weight allows: the factors applied in
        turn where the weight keeps their structure (:meth:`factored_forward`); otherwise the
        cached weight at inference, or the weight built by :meth:`_rows_linear`."""
        if not self.materialises_weight:
            return self.factored_forward(x)
        bias = self.dense_bias()
        weight = self._cached_weight()
        if weight is not None:
            return F.linear(x, weight, bias)
        return self._rows_linear(
            x, self.weight_rows, self.weight_rows_vjp, self.effective_weight, bias
        )

    def factored_forward(self, x: Tensor) -> Tensor:
        """The forward pass of a variant that never builds its weight: its factors applied one
        after the other, two thin matmuls."""
        raise NotImplementedError(
            f"{type(self).__name__} applies no factors in turn: it sets materialises_weight"
        )

    def _rows_linear(
        self,
        x: Tensor,
        rows_fn: WeightFn,
        rows_vjp: WeightVJPFn,
        whole: Callable[[], Tensor],
        bias: Tensor | None = None,
    ) -> Tensor:
        """``x Mᵀ + bias`` for a matrix ``M`` built from :meth:`weight_params` (the weight, or an
        adapter's update): built by ``whole`` under plain autograd where ``fused=False``,
        otherwise a block of ``rows_fn``'s rows at a time, each block's backward by
        ``rows_vjp`` (:func:`~sinelr.layers.functional.blockwise_linear`)."""
        if not self.fused:
            return F.linear(x, whole(), bias)
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
        if self.training or torch.is_grad_enabled():
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

#: What holds only for the class that declares it, with its value where a class declares none.
OWN_FACTS: dict[str, Any] = {"peft_method": None, "omega_auto": False, "peft_adapter": None}
#: What a sine twin does not declare: registration derives it from the plain variant.
DERIVED = ("kind", "sine_of", "peft_method", "hyperparameters", "omega_auto")
#: Each registered class's own attributes as they were before registration set its facts, so
#: that unregistering leaves the class as it was (:data:`_ABSENT` where it had none).
_OVERWRITTEN: dict[type[LowRankLayer], dict[str, Any]] = {}
_ABSENT = object()


def register_lowrank(name: str) -> Callable[[LayerT], LayerT]:
    """Class decorator: make a variant selectable by name (and by ``rank/omega/adapter``).

    A name ``sine_X`` registers the sine twin of ``X``, which must be registered first: the
    twin's kind, settings (``X``'s and :data:`~sinelr.layers.sine.SINE_SETTINGS`) and
    ``omega=auto`` rule are ``X``'s, and it equals no PEFT method; the class declares none of
    these. The class is checked here, so that a variant that would confuse the rest of sinelr,
    or that its own settings could not build, fails on import, naming the class.
    """

    def decorator(cls: LayerT) -> LayerT:
        if name in LOWRANK_LAYERS:
            raise ValueError(f"low-rank variant {name!r} is already registered")
        if not (isinstance(cls, type) and issubclass(cls, LowRankLayer)):
            raise _registration_error(name, cls, "a variant subclasses sinelr.layers.LowRankLayer")
        if cls in _OVERWRITTEN:
            raise _registration_error(name, cls, f"it is registered already, as {cls.variant!r}")
        if name.startswith(SINE_PREFIX):
            facts = _twin_facts(name, cls, name.removeprefix(SINE_PREFIX))
        else:
            facts = _plain_facts(name, cls)
        _check_constructor(name, cls, facts["hyperparameters"])
        facts["variant"] = name
        _OVERWRITTEN[cls] = {fact: vars(cls).get(fact, _ABSENT) for fact in facts}
        for fact, value in facts.items():
            setattr(cls, fact, value)
        LOWRANK_LAYERS[name] = cls
        return cls

    return decorator


def _registration_error(name: str, cls: type, problem: str) -> ValueError:
    return ValueError(f"cannot register {cls.__qualname__} as {name!r}: {problem}")


def _own_facts(cls: type[LowRankLayer]) -> dict[str, Any]:
    return {fact: vars(cls).get(fact, default) for fact, default in OWN_FACTS.items()}


def _plain_facts(name: str, cls: type[LowRankLayer]) -> dict[str, Any]:
    """A plain variant's declarations, checked; ``sine_of`` None, the own facts its own."""

    def fail(problem: str) -> ValueError:
        return _registration_error(name, cls, problem)

    missing = [d for d in ("kind", "hyperparameters") if not hasattr(cls, d)]
    if missing:
        raise fail(f"it does not declare {', '.join(missing)} (see LowRankLayer)")
    if "sine_of" in vars(cls):
        raise fail(f"sine_of follows from the name: the twin of X registers as {SINE_PREFIX}X")
    if cls.kind not in KINDS:
        raise fail(f"kind must be one of {', '.join(KINDS)}, got {cls.kind!r}")
    if not isinstance(cls.hyperparameters, frozenset):
        raise fail(f"hyperparameters must be a frozenset, got {cls.hyperparameters!r}")
    settings = {f.name for f in fields(LowRankConfig)} - {"variant", "rank"}
    if cls.hyperparameters - settings:
        raise fail(
            f"hyperparameters must be LowRankConfig fields ({', '.join(sorted(settings))}), "
            f"got {', '.join(sorted(cls.hyperparameters - settings))}"
        )
    if "omega" in cls.hyperparameters or issubclass(cls, SineActivated):
        raise fail(
            f"a plain variant reads no omega and has no sine: omega= selects its twin, "
            f"registered as {SINE_PREFIX}{name}"
        )
    hyperparameters = cls.hyperparameters | ROW_BLOCK_SETTINGS
    return {"sine_of": None, "hyperparameters": hyperparameters, **_own_facts(cls)}


def _twin_facts(name: str, cls: type[LowRankLayer], plain_name: str) -> dict[str, Any]:
    """A sine twin's facts, derived from its plain variant's, once it is checked to be one."""

    def fail(problem: str) -> ValueError:
        return _registration_error(name, cls, problem)

    declared = [fact for fact in DERIVED if fact in vars(cls)]
    if declared:
        raise fail(
            f"it declares {', '.join(declared)}, which a sine twin takes from {plain_name}, its "
            "plain variant: declare only what differs from it"
        )
    plain = LOWRANK_LAYERS.get(plain_name)
    if plain is None or plain.sine_of is not None:
        raise fail(f"{plain_name!r} is not a registered plain variant; register it first")
    if not issubclass(cls, SineActivated):
        raise fail("a sine twin subclasses sinelr.layers.sine.SineActivated, which applies ω")
    # On the class itself: what the sine stands for is the twin's own fact.
    if not isinstance(vars(cls).get("gain_rule"), GainRule):
        raise fail(
            "a sine twin declares its default gain on the class itself: gain_rule = "
            "GainRule.FAN_IN (the sine is a weight, or is added to one: g = sqrt(d_in)) or "
            "GainRule.UNIT (a relative change multiplied into W0: g = 1); see "
            "sinelr.layers.sine.GainRule"
        )
    return {
        **_own_facts(cls),
        "kind": plain.kind,
        "sine_of": plain_name,
        "peft_method": None,
        "hyperparameters": plain.hyperparameters | SINE_SETTINGS,
        "omega_auto": plain.omega_auto,
    }


def _check_constructor(name: str, cls: type[LowRankLayer], settings: frozenset[str]) -> None:
    """Raise, naming ``cls``, unless its constructor takes every setting it reads as a keyword.

    :meth:`LowRankLayer.from_linear` passes each: one the constructor lacks (a twin built on a
    plain class other than its plain variant's) would be a TypeError when the layer is built.
    Keywords are followed up the method resolution order through each ``**kwargs``, as
    cooperative ``super().__init__`` calls pass them on.
    """
    taken: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        taken |= {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    missing = sorted(settings - taken)
    if missing:
        raise _registration_error(
            name,
            cls,
            f"its constructor takes no {', '.join(missing)}, which the variant reads: "
            "from_linear passes each setting it reads as a keyword of the same name",
        )


def unregister_lowrank(name: str) -> None:
    """Remove a variant from the registry, its class left as it was before it registered: for
    tests that register one of their own.

    A plain variant goes after its sine twin, so that no twin is left without its plain one.
    """
    cls = get_lowrank_class(name)  # an unknown name is an error, as everywhere
    twin = sine_twin(name)
    if twin is not None:
        raise ValueError(f"unregister {twin!r} before {name!r}, the plain variant it activates")
    del LOWRANK_LAYERS[name]
    for fact, value in _OVERWRITTEN.pop(cls).items():
        if value is _ABSENT:
            delattr(cls, fact)
        else:
            setattr(cls, fact, value)


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
