"""HiRA and sine HiRA: a low-rank matrix multiplied entry by entry into ``W0``.

Q. Huang, T. Ko, Z. Zhuang, L. Tang, Y. Zhang, *HiRA: Parameter-Efficient Hadamard High-Rank
Adaptation for Large Language Models*, ICLR 2025. The update is the Hadamard product

    ΔW = W0 ⊙ (B A),   A ∈ R^{r×d_in} Kaiming-uniform,   B ∈ R^{d_out×r} = 0,

high-rank wherever ``W0`` is (``rank(W0 ⊙ BA) ≤ rank(W0)·r``), with LoRA's parameters and no
scaling ``α``. This is PEFT's ``HiraConfig`` (its default ``init_weights=True``).

``sine_hira`` applies ``ΔW = W0 ⊙ sin(ω·B A)/g``; ``B = 0`` gives ``sin(0) = 0``, unchanged at
step 0. Its default gain is ``g = 1``, not the other twins' ``√d_in``: ``B A`` is a relative
change (``ΔW_ij / W0_ij``), so the sine takes its place unscaled, and ``W0`` gives the update a
weight's scale as it does plain HiRA's. With ``g = √d_in`` no entry could move by more than
``1/√d_in`` of itself, whatever ω (:class:`~sinelr.layers.sine.GainRule` derives both rules).
Both materialise ``ΔW`` (it is no low-rank product), so both train on LoRA's row-blocked
path: a block of rows of ``W0 + ΔW`` is built in the forward pass and again in the backward
pass, never the whole matrix. The sine twin's block backward is written out (sine LoRA's, its
incoming gradient multiplied by ``W0``'s block).

Merging folds ``W0 ⊙ (1 + BA)`` into the base layer; unmerging restores a copy of ``W0`` kept
(on the CPU, as PEFT does) while merged, exactly: dividing by ``1 + BA`` would not be exact,
and not defined where ``BA = −1``.
"""

from __future__ import annotations

from torch import Tensor

from sinelr.layers.adapters import VJP, LoRALinear, SineProduct
from sinelr.layers.base import register_lowrank
from sinelr.layers.peft_format import PeftAdapter, PeftLayers, peft_tensors
from sinelr.layers.sine import GainRule


@register_lowrank("hira")
class HiRALinear(LoRALinear):
    """``h = W0 x + (W0 ⊙ B A) dropout(x)`` (module docstring): LoRA's factors, and its
    :meth:`~sinelr.layers.LoRALinear.product_rows` (``B A``, no ``α``) as a relative change."""

    peft_method = "hira"
    hyperparameters = frozenset({"dropout"})  # and fused, block_elems, added to all
    omega_auto = True  # the sine's argument is LoRA's ω·B A; W0 multiplies it after
    materialises_weight = True
    #: A copy of ``W0`` while merged, for an exact unmerge.
    _merge_base: Tensor | None = None

    @classmethod
    def peft_adapter(cls, request: PeftLayers) -> PeftAdapter:
        """PEFT's ``HiraConfig``, whose ``hira_A``/``hira_B`` are our ``lora_A``/``lora_B``."""
        lowrank = request.lowrank
        config = {
            **request.options,
            "peft_type": "HIRA",
            "r": lowrank.rank,
            "hira_dropout": lowrank.dropout,
        }
        names = {"hira_A": "lora_A", "hira_B": "lora_B"}
        return PeftAdapter(config, peft_tensors(request.layers, names))

    def update_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        return W0[rows] * self.product_rows(rows, *factors)

    def weight_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        return W0[rows] + self.update_rows(rows, W0, *factors)

    def factorised_weight(self) -> Tensor:
        """``W0 ⊙ BA`` (or its sine): the high-rank update, the frozen ``W0`` also when merged."""
        W0, *factors = self.weight_params()
        if self._merge_base is not None:
            W0 = self._merge_base.to(W0.device)
        return self.update_rows(slice(None), W0, *factors)

    def merged_weight(self) -> Tensor:
        merged = super().merged_weight()
        self._merge_base = self.base_layer.weight.detach().to("cpu", copy=True)
        return merged

    def unmerged_weight(self) -> Tensor:
        assert self._merge_base is not None
        W0, self._merge_base = self._merge_base, None
        return W0


@register_lowrank("sine_hira")
class SineHiRALinear(SineProduct, HiRALinear):
    """``ΔW = W0 ⊙ sin(ω·B A)/g``; its blocks' backward is written out."""

    #: ``g = 1``: ``sin(ω·BA)`` stands for ``BA``, a relative change that ``W0`` scales
    #: already (:class:`~sinelr.layers.sine.GainRule`; the module docstring).
    gain_rule = GainRule.UNIT

    def update_rows_vjp(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> tuple[Tensor, VJP]:
        """``dL/dsin = dL/dΔW ⊙ W0``, then sine LoRA's closed form: three block-sized tensors."""
        sine, sine_vjp = self.product_rows_vjp(rows, B, A)
        base = W0[rows]
        return sine.mul_(base), lambda grad: (None, *sine_vjp(grad.mul_(base)))

    def weight_rows_vjp(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> tuple[Tensor, VJP]:
        update, vjp = self.update_rows_vjp(rows, W0, B, A)
        return update.add_(W0[rows]), vjp
