"""The one place that decides a checkpoint's prompts and generation settings.

Whatever way a checkpoint is named, its `PredictionSettings` come from, in order:

1. **the catalogue entry** when the checkpoint is a catalogue checkpoint: named by its catalogue name, or
   passed as a folder that `mixkit.models.hub.identify_checkpoint` recognises by location (the
   `$MIXKIT_HOME/checkpoints/<name>` folder a name resolves to, or the Hugging Face cache snapshot of the
   entry's Hub repository). So `blip2-caption-opt2.7b` and the folder `hf download
   Salesforce/blip2-opt-2.7b-coco` wrote both caption with `"a photo of"`;
2. **the folder's own `mixkit_settings.json`**, which mixkit writes beside every checkpoint it trains or saves;
3. **the family's reference settings** (for BLIP-2: LAVIS's beams, lengths and VQA prompt) with no caption
   prompt: a folder that names none, such as one written by `transformers`' `save_pretrained`.

Options the user passes (`--prompt`, `--num-beams`, ...) then go on top (`GenerationSettings.with_overrides`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mixkit.models.entry import CheckpointEntry
from mixkit.models.settings import PredictionSettings


def resolve_prediction_settings(directory: Path, entry: CheckpointEntry | None,
                                family_defaults: Callable[[], PredictionSettings]) -> PredictionSettings:
    """`directory`'s settings by the rule above; `entry` is the catalogue entry when the caller knows it."""
    if entry is not None:
        if entry.settings is None:
            raise ValueError(f"{entry.name} generates no text (its tasks: {', '.join(entry.tasks)})")
        return entry.settings
    own = PredictionSettings.load(directory)
    return own if own is not None else family_defaults()
