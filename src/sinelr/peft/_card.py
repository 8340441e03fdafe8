"""The note a saved sine adapter carries in its model card: what to import before loading it.

A process that has not imported sinelr.peft fails to load the adapter with PEFT's
``KeyError: 'SINELORA'``, raised before any code of ours can run, and a ``KeyError`` prints its
key only. The README.md beside ``adapter_config.json`` (PEFT's model card, on the Hub the
adapter's page) is what a user who hits it reads, so it says the fix, and its tags name the
method (PEFT tags LoRA adapters ``lora`` only).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

TAGS = ("sine-lora", "sinelr")
HEADING = "## Loading this sine LoRA adapter"
NOTE = f"""{HEADING}

This is a sine LoRA adapter (`"peft_type": "SINELORA"` in `adapter_config.json`): its update
is `ΔW = (α/r)·sin(ω·B A)/g`, not LoRA's `B A`. PEFT loads it only after `import sinelr.peft`
(from the sinelr package), which registers the method; without the import, loading fails with
`KeyError: 'SINELORA'`. Do not load it as plain LoRA: the result would be another model. To
serve it where sinelr is not installed, merge it (`merge_and_unload()`) and serve the merged
model.
"""


def add_loading_note(directory: str | Path) -> None:
    """Tag the model card in ``directory`` and put :data:`NOTE` at its top, once (PEFT's card
    is a long template; the note is what a user who cannot load the adapter needs first),
    creating the card where PEFT wrote none (a config saved alone, an adapter in a subfolder)."""
    path = Path(directory) / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard("---\nlibrary_name: peft\n---\n")
    card.data.tags = sorted(set(card.data.tags or ()) | set(TAGS))
    if HEADING not in card.text:
        card.text = f"{NOTE}\n{card.text.lstrip()}"
    card.save(path)
