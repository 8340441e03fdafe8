"""Sine LoRA and sine DoRA as a method of Hugging Face PEFT: import this module, then use PEFT.

    import sinelr.peft
    from peft import get_peft_model

    model = get_peft_model(model, sinelr.peft.SineLoraConfig(
        r=8, lora_alpha=16, omega=200, target_modules=["q_proj", "v_proj"]))

Importing this module registers the method with PEFT (its purpose; nothing else in sinelr imports
it). The adapter's update is ``ΔW = (α/r)·sin(ω·B A)/g``, computed by sinelr's own layers (the
row-blocked path: memory at LoRA's level, exact merging); ``use_dora=True`` gives sine DoRA.
``save_pretrained`` writes ``peft_type: "SINELORA"`` with ``omega`` and ``gain`` to
``adapter_config.json``, and a note on what to import to the model card beside it; a process
that has not imported sinelr.peft cannot load it (PEFT fails on the unknown ``peft_type``)
rather than load it as plain LoRA. See docs/peft.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from peft import LoraConfig

from sinelr.layers.config import is_positive_number
from sinelr.peft._card import add_loading_note
from sinelr.peft._internals import PEFT_TYPE, SineLinear, SineLoraModel, claim, register

__all__ = ["PEFT_TYPE", "SineLinear", "SineLoraConfig", "SineLoraModel"]

# The `init_lora_weights` values that leave W0 as it is. The others (pissa, olora, ...) rewrite
# W0 so that W0' + B A = W0 for LoRA's update B A only: with the sine's update the adapted
# model would not start as the pretrained one.
_INITS = (True, False, "gaussian")


@dataclass
class SineLoraConfig(LoraConfig):
    """A ``LoraConfig`` whose update is ``(α/r)·sin(ω·B A)/g``: sine LoRA, or sine DoRA.

    ``omega`` (ω, required) is the sine's frequency; ``gain`` (g) defaults to ``sqrt(d_in)`` of
    each layer, as everywhere in sinelr. ``use_dora=True`` puts the sine update inside DoRA's
    normalisation; its norm is held constant in the backward pass, as PEFT's DoRA does. LoRA's
    other options (``r``, ``lora_alpha``, ``target_modules``, ``lora_dropout``, ``use_rslora``,
    ``rank_pattern``, ``modules_to_save``, ...) mean what they mean for PEFT's LoRA.
    """

    omega: float | None = field(
        default=None,
        metadata={"help": "The sine's frequency ω in ΔW = (α/r)·sin(ω·BA)/g; required."},
    )
    gain: float | None = field(
        default=None,
        metadata={"help": "The gain g in ΔW = (α/r)·sin(ω·BA)/g; None: sqrt(d_in) per layer."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_positive_number(self.omega):
            raise ValueError(
                f"SineLoraConfig needs omega, a positive number (the sine's frequency, e.g. "
                f"omega=200), got {self.omega!r}; for plain LoRA use peft.LoraConfig"
            )
        self.omega = float(self.omega)
        if self.gain is not None:
            if not is_positive_number(self.gain):
                raise ValueError(f"gain must be a positive number or None, got {self.gain!r}")
            self.gain = float(self.gain)
        if self.init_lora_weights not in _INITS:
            raise ValueError(
                f"init_lora_weights={self.init_lora_weights!r} is made for LoRA's update B A, "
                f"not sine LoRA's; use one of {_INITS}"
            )
        unsupported = {
            "lora_bias": self.lora_bias,
            "fan_in_fan_out": self.fan_in_fan_out,
            "target_parameters": getattr(self, "target_parameters", None),
        }
        for name, value in unsupported.items():
            if value:
                raise ValueError(
                    f"sine LoRA does not support {name}={value!r}: it adapts nn.Linear weights "
                    "with B and A only"
                )
        claim(self)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """PEFT's save, and the model card's note on loading (``sinelr/peft/_card.py``): PEFT
        writes its card before each adapter's config, so the note survives every save."""
        super().save_pretrained(save_directory, **kwargs)
        add_loading_note(save_directory)


register(SineLoraConfig)
