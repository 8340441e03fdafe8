"""Every PEFT internal that sinelr.peft relies on, in one module (docs/peft.md lists them).

PEFT has no finished API for a LoRA variant that lives outside its tree. This module uses the
least of it that makes sine LoRA a method of its own (tests/test_sinelr_peft.py pins each item):

1. ``peft.mapping``'s ``PEFT_TYPE_TO_CONFIG_MAPPING``, ``PEFT_TYPE_TO_TUNER_MAPPING`` and
   ``PEFT_TYPE_TO_PREFIX_MAPPING``: the three dicts ``register_peft_method`` fills. That function
   refuses a name outside PEFT's own ``PeftType`` enum, so the entries are written here, under a
   ``peft_type`` of our own (:data:`PEFT_TYPE`, a ``str`` enum member like PEFT's, whose
   ``.value`` PEFT's messages read): an adapter saved with it can never load as plain LoRA.
2. ``LoraConfig.__post_init__`` sets ``peft_type`` to LoRA's; :func:`claim` sets ours after it.
3. ``LoraConfig._register_custom_module`` (experimental): ``LoraModel`` builds every targeted
   layer with the class the config maps its type to, before its own dispatch. The mapping is not
   saved with the config, so :func:`claim` runs whenever a config is built, loading included.
4. ``LoraModel`` as the tuner, subclassed (:class:`SineLoraModel`) only to refuse what LoRA's
   algebra would get wrong: ``add_weighted_adapter``, and a merge that one layer would refuse
   (checked for every layer before any merges: ``merge_adapter`` and
   ``_unload_and_optionally_merge``, which ``merge_and_unload`` calls).
5. ``lora.Linear`` and the ``LoraVariant`` protocol: ``resolve_lora_variant(config=...)`` picks a
   variant when a layer gets an adapter, and the layer calls the variant's ``init``,
   ``forward(module, active_adapter, x, result)``, ``merge_safe``, ``merge_unsafe`` and
   ``unmerge``; ``DoraLinearVariant`` is what it picks for ``use_dora=True``. The layer's own
   ``forward`` and ``merge`` are overridden (:class:`SineLinear`), falling back to PEFT's.
6. A layer's per-adapter state: ``lora_A[name].weight``, ``lora_B[name].weight``,
   ``scaling[name]``, ``lora_dropout[name]``, ``lora_alpha``, ``r``, ``get_base_layer()``,
   ``merged_adapters``, ``active_adapters``, ``disable_adapters``, and DoRA's magnitude as the
   ``weight`` of a ``DoraLinearLayer`` in ``lora_magnitude_vector[name]``, whose file format
   ``LoraModel`` keeps for ``use_dora=True``.

Nothing here changes what PEFT does for any other ``peft_type``. PEFT 0.21.0 is the oldest
version it was tried with (0.20 cannot save an adapter of an outside ``peft_type``).
"""

# ruff: noqa: E402  (PEFT's internals are imported after the check of its version)
from __future__ import annotations

import enum
from typing import Any

import peft
import torch

MIN_PEFT = (0, 21)
"""PEFT 0.20 and older save an adapter only for a ``peft_type`` of their own enum."""
if tuple(int(part) for part in peft.__version__.split(".")[:2]) < MIN_PEFT:
    raise ImportError(
        f"sinelr.peft needs peft >= {'.'.join(map(str, MIN_PEFT))}, found {peft.__version__}: "
        "pip install -U 'peft>=0.21'"
    )

from peft.mapping import (
    PEFT_TYPE_TO_CONFIG_MAPPING,
    PEFT_TYPE_TO_PREFIX_MAPPING,
    PEFT_TYPE_TO_TUNER_MAPPING,
)
from peft.tuners.lora import LoraConfig, LoraModel
from peft.tuners.lora.dora import DoraLinearLayer
from peft.tuners.lora.layer import Linear, LoraVariant
from peft.tuners.lora.variants import DoraLinearVariant
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import Tensor, nn

from sinelr.layers import LoRALinear, SineDoRALinear, SineLoRALinear
from sinelr.layers.functional import blockwise_linear


class SinePeftType(str, enum.Enum):  # noqa: UP042  (StrEnum's str() would lose the name)
    """sinelr.peft's ``peft_type``, made as PEFT makes its own ``PeftType`` members.

    PEFT reads ``peft_type.value`` in its messages (``mixed=True``, hotswapping, gradient
    checkpointing) and ``str(peft_type)``'s part after the dot in ``get_model_status``, so the
    type must be an enum member, not a ``str``. As a ``str`` enum member whose name is its value,
    it equals and hashes as ``"SINELORA"``: ``adapter_config.json`` holds that string, and the
    string read back finds the entries registered under the member.
    """

    SINELORA = "SINELORA"


PEFT_TYPE = SinePeftType.SINELORA
"""The ``peft_type`` in ``adapter_config.json``; unknown to a PEFT that has not imported us."""


def register(config_cls: type[LoraConfig]) -> None:
    """Make :data:`PEFT_TYPE` a PEFT method: ``config_cls`` its config, :class:`SineLoraModel`
    its tuner."""
    PEFT_TYPE_TO_CONFIG_MAPPING[PEFT_TYPE] = config_cls
    PEFT_TYPE_TO_TUNER_MAPPING[PEFT_TYPE] = SineLoraModel
    PEFT_TYPE_TO_PREFIX_MAPPING[PEFT_TYPE] = SineLoraModel.prefix


def claim(config: LoraConfig) -> None:
    """Make ``config`` ours: our ``peft_type``, and every target built as a :class:`SineLinear`.

    Every module type maps to :class:`SineLinear`, which refuses what it cannot adapt, so that no
    target falls through to PEFT's plain LoRA layers.
    """
    config.peft_type = PEFT_TYPE
    config._register_custom_module({nn.Module: SineLinear})


WEIGHTED_REFUSAL = (
    "add_weighted_adapter cannot combine sine LoRA adapters: their ΔW is sin(ω·BA)/g, not BA, "
    "so combining their A and B (or an SVD of ΔW) does not give the sum of their ΔW; activate "
    "them together instead (model.base_model.set_adapter([...]) applies ΔW_a + ΔW_b) or merge them"
)
"""Every ``combination_type`` of LoRA's ``add_weighted_adapter`` combines ``A`` and ``B`` (or
the SVD of ``ΔW``) as if ``ΔW`` were ``B A``, and one sine adapter cannot hold the sum of two
sines, so none is exact for sine adapters; PEFT refuses DoRA there already."""


class SineLoraModel(LoraModel):
    """PEFT's ``LoraModel`` for sine adapters, refusing what LoRA's algebra would get wrong.

    Only refusals are added: ``add_weighted_adapter`` (:data:`WEIGHTED_REFUSAL`), and a merge
    that any layer would refuse, checked for every layer before any layer merges, so that a
    refused merge leaves the model as it was (PEFT merges layer by layer).
    """

    def add_weighted_adapter(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError(WEIGHTED_REFUSAL)

    def merge_adapter(
        self, adapter_names: list[str] | None = None, safe_merge: bool = False, **kwargs: Any
    ) -> None:
        self._check_merge(adapter_names)
        super().merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge, **kwargs)

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        """What ``merge_and_unload`` calls; a merge is checked before any layer is unloaded."""
        if merge:
            self._check_merge(adapter_names)
        return super()._unload_and_optionally_merge(
            merge=merge, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )

    def _check_merge(self, adapter_names: list[str] | None) -> None:
        for name, module in self.model.named_modules():
            if isinstance(module, SineLinear):
                problem = module.merge_refusal(adapter_names)
                if problem is not None:
                    raise ValueError(f"{name}: {problem}; nothing was merged")


class SineLinear(Linear):
    """PEFT's LoRA layer whose adapters are sine LoRA (sine DoRA with ``use_dora``).

    Its forward pass applies ``W'·x`` as one product where PEFT's applies ``W0·x`` and then
    each adapter's term (:meth:`forward`), and its merge checks every adapter before merging
    any (:meth:`merge`).
    """

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, config: LoraConfig, **kwargs: Any
    ) -> None:
        base = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        weight = getattr(base, "weight", None)
        if not isinstance(base, nn.Linear) or weight is None or not weight.is_floating_point():
            what = type(base).__name__ + (f" ({weight.dtype})" if weight is not None else "")
            raise TypeError(
                f"sine LoRA adapts nn.Linear layers with floating-point weights; "
                f"{kwargs.get('target_name') or 'a target'} is a {what}: "
                "leave it out of target_modules"
            )
        super().__init__(base_layer, adapter_name, config=config, **kwargs)

    def resolve_lora_variant(self, *, config: LoraConfig, **kwargs: Any) -> LoraVariant:
        plain = super().resolve_lora_variant(config=config, **kwargs)
        if plain is not None and not isinstance(plain, DoraLinearVariant):
            raise ValueError(
                f"sine LoRA does not combine with PEFT's {type(plain).__name__}; "
                "of LoRA's variants it has DoRA only (use_dora=True)"
            )
        return SineVariant(dora=plain is not None, omega=config.omega, gain=config.gain)

    def get_delta_weight(self, adapter: str) -> Tensor:
        """``W' - W0`` of ``adapter``, not LoRA's ``B A``, for PEFT's tools that ask for it."""
        variant = self.lora_variant[adapter]
        assert isinstance(variant, SineVariant)
        core = variant.bind(self, adapter)
        with core.autocast_off():
            return core.update_rows(slice(None), *core.weight_params())

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """``W'·x`` in one row-blocked product, as sinelr's own layer computes it, where one
        adapter is active, its dropout is off and the product runs in one dtype; PEFT's forward
        (``W0·x`` plus each adapter's ``(W' - W0)·x``) otherwise.

        The dtype condition: under autocast both of PEFT's products run in its dtype; without
        it, a half-precision input (a bf16 model) meets PEFT's base product in bf16 but the
        adapter's in its factors' fp32, and ``W'`` as one bf16 product would round ``ΔW`` to
        the precision of ``W0``, so that case keeps PEFT's two products.
        """
        adapter = self._single_product_adapter(x, args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        variant = self.lora_variant[adapter]
        assert isinstance(variant, SineVariant)
        core = variant.bind(self, adapter)
        # In the dtype PEFT's two products would return: the autocast dtype, or x's.
        return blockwise_linear(
            x,
            core.weight_rows,
            core.weight_params,
            core.out_features,
            self.get_base_layer().bias,
            core.block_elems,
            core.weight_rows_vjp,
        )

    def _single_product_adapter(
        self, x: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str | None:
        """The adapter whose ``W'·x`` is this call's whole output, if one is (see forward)."""
        if args or kwargs or self.disable_adapters or self.merged:
            return None  # PEFT's arguments (adapter_names, ...), or the base layer alone
        active = [name for name in self.active_adapters if name in self.lora_A]
        if len(active) != 1:
            return None
        (adapter,) = active
        dropout = self.lora_dropout[adapter]
        if dropout.training and not isinstance(dropout, nn.Identity):
            return None  # dropout feeds the adapter's term only, as in PEFT
        factors = self.lora_A[adapter].weight.dtype
        if not torch.is_autocast_enabled(x.device.type) and x.dtype != factors:
            return None
        return adapter

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """PEFT's merge, after checking that every adapter it would merge can be merged, so that
        a refused merge leaves the layer as it was instead of half-merged."""
        problem = self.merge_refusal(adapter_names)
        if problem is not None:
            raise ValueError(problem)
        super().merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def merge_refusal(self, adapter_names: list[str] | None) -> str | None:
        """Why merging ``adapter_names`` (None: the active adapters) here would be wrong, in
        PEFT's order; None if it would be exact.

        With several adapters active, the forward pass adds each adapter's ``W' - W0`` to
        ``W0·x``. Sine DoRA's ``W' - W0`` depends on ``W0`` (it normalises ``W0 + ΔW`` row by
        row), so its merge is exact only into ``W0``: not after another adapter, merged earlier
        or before it in this call. Sine LoRA's ``ΔW`` does not, so it merges after anything.
        (PEFT's DoRA merges there because its forward pass chains DoRA adapters instead, each
        rescaling the output of those before it, where dropout is off.)
        """
        held = list(self.merged_adapters)
        for name in self.active_adapters if adapter_names is None else adapter_names:
            if name in held or name not in self.lora_A:
                continue
            variant = self.lora_variant[name]
            if isinstance(variant, SineVariant) and variant.dora and held:
                return (
                    f"cannot merge sine DoRA adapter {name!r} into a weight that would hold "
                    f"{held}: sine DoRA normalises W0 + ΔW, so it merges exactly only into W0; "
                    "merge it first, or keep it unmerged"
                )
            held.append(name)
        return None

    def __repr__(self) -> str:
        # lora.Linear's repr prefixes "lora."; this class is sinelr.peft.SineLinear.
        return "sinelr.peft." + nn.Module.__repr__(self)


class SineVariant(LoraVariant):
    """One adapter of one layer, computed by sinelr's own layer (``core``) on PEFT's tensors.

    ``core`` is a :class:`~sinelr.layers.SineLoRALinear` or :class:`~sinelr.layers.SineDoRALinear`
    built on the meta device (it allocates nothing), holding ω, g and DoRA's ``detach_norm``;
    :meth:`bind` points it at the adapter's tensors before each use, so it always computes with
    the tensors PEFT holds now (after ``.to()``, a load with ``assign=True``, ``set_scale``).
    """

    def __init__(self, *, dora: bool, omega: float, gain: float | None) -> None:
        self.dora = dora
        self.omega = omega
        self.gain = gain
        self.core: LoRALinear | None = None

    def supports_lora_conversion(self) -> bool:
        return False  # sin(ω·BA)/g is no rank-r product

    def init(self, module: Linear, adapter_name: str, **kwargs: Any) -> None:
        shape = nn.Linear(module.in_features, module.out_features, bias=False, device="meta")
        options = {"alpha": module.lora_alpha[adapter_name], "omega": self.omega, "gain": self.gain}
        rank = module.r[adapter_name]
        # Held constant in DoRA's backward pass, as PEFT's DoRA does.
        self.core = (
            SineDoRALinear(shape, rank, detach_norm=True, **options)
            if self.dora
            else SineLoRALinear(shape, rank, **options)
        )
        # Its own (meta) factors go: bind() sets PEFT's tensors in their place each call.
        for name, _ in list(self.core.named_parameters(recurse=False)):
            delattr(self.core, name)
        if self.dora:
            self._add_magnitude(module, adapter_name)

    def _add_magnitude(self, module: Linear, adapter: str) -> None:
        """DoRA's magnitude, ``||W0 + ΔW||`` per output row, where PEFT's DoRA keeps its own."""
        if "lora_magnitude_vector" not in module.adapter_layer_names:
            module.adapter_layer_names = (*module.adapter_layer_names, "lora_magnitude_vector")
        A, B = module.lora_A[adapter].weight, module.lora_B[adapter].weight
        if A.is_meta:  # low_cpu_mem_usage: the weights are loaded in later
            magnitude = torch.empty(module.out_features, dtype=A.dtype, device="meta")
        else:
            assert self.core is not None
            self.core.scaling = module.scaling[adapter]
            with torch.no_grad():
                W0 = module.get_base_layer().weight
                magnitude = (W0 + self.core.product_rows(slice(None), B, A)).norm(dim=1)
        holder = DoraLinearLayer(fan_in_fan_out=False)
        holder.weight = nn.Parameter(magnitude.to(A.dtype), requires_grad=A.requires_grad)
        module.lora_magnitude_vector[adapter] = holder

    def bind(self, module: Linear, adapter: str) -> LoRALinear:
        """``core``, computing with ``adapter``'s tensors in ``module`` as they are now.

        They are set as plain attributes, bypassing ``nn.Module.__setattr__``: where FSDP1's
        flat-parameter views or ``torch.func.functional_call`` put plain tensors in place of
        PEFT's parameters, a registered parameter of ``core`` would refuse them.
        """
        core = self.core
        assert core is not None, "SineVariant.init was not called"
        core.base_layer = module.get_base_layer()
        tensors = {"lora_A": module.lora_A[adapter].weight, "lora_B": module.lora_B[adapter].weight}
        if self.dora:
            tensors["magnitude"] = module.lora_magnitude_vector[adapter].weight
        for name, tensor in tensors.items():
            object.__setattr__(core, name, tensor)
        core.scaling = module.scaling[adapter]
        return core

    def forward(
        self, module: Linear, active_adapter: str, x: Tensor, result: Tensor, **kwargs: Any
    ) -> Tensor:
        """The base output plus ``(W' - W0)·dropout(x)``, row-blocked by sinelr."""
        core = self.bind(module, active_adapter)
        return result + core.update_output(module.lora_dropout[active_adapter](x))

    @torch.no_grad()
    def merge_safe(self, module: Linear, active_adapter: str, orig_weight: Tensor) -> Tensor:
        return self._merged(module, active_adapter).to(orig_weight.dtype)

    @torch.no_grad()
    def merge_unsafe(self, module: Linear, active_adapter: str, orig_weight: Tensor) -> None:
        orig_weight.data.copy_(self._merged(module, active_adapter))

    @torch.no_grad()
    def unmerge(self, module: Linear, active_adapter: str, orig_weight: Tensor) -> Tensor:
        core = self.bind(module, active_adapter)
        with core.autocast_off():
            return core.unmerged_weight().to(orig_weight.dtype)

    def _merged(self, module: Linear, adapter: str) -> Tensor:
        """``W'`` by sinelr's merge, on the weight the layer holds now (``W0`` for sine DoRA:
        :meth:`SineLinear.merge_refusal` refused the rest)."""
        core = self.bind(module, adapter)
        with core.autocast_off():
            return core.merged_weight()
