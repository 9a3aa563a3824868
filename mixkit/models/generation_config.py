"""A `transformers`-saved folder's `generation_config.json` as mixkit `GenerationSettings` (new-token terms).

What `transformers`' `generate` does with the file when the caller passes nothing else (transformers 5.x,
`generation/configuration_utils.py` defaults and `generation/utils.py::_prepare_generated_length`): greedy
(`num_beams` 1), 20 new tokens when neither `max_new_tokens` nor `max_length` is set, length and repetition
penalties 1.0. A `max_length` / `min_length` counts the decoder start token for an encoder-decoder model; for a
decoder-only multimodal model it counts the whole prompt (image tokens included), which mixkit cannot know here:
such a file is read as that many new tokens, with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mixkit.models.settings import GenerationSettings

logger = logging.getLogger(__name__)
GENERATION_CONFIG_NAME = "generation_config.json"
DEFAULT_NEW_TOKENS = 20  # transformers: "by default let's always generate 20 new tokens"


def _new_tokens(config: dict, encoder_decoder: bool, path: Path) -> tuple[int, int]:
    """(max, min) new tokens."""
    start = 1 if encoder_decoder else 0  # the decoder start token that max_length / min_length count
    if config.get("max_new_tokens") is not None:
        most = int(config["max_new_tokens"])
    elif config.get("max_length") is not None:
        most = int(config["max_length"]) - start
        if not encoder_decoder:
            logger.warning("%s: max_length=%s counts the prompt in transformers; mixkit reads it as new tokens",
                           path, config["max_length"])
    else:
        most = DEFAULT_NEW_TOKENS
    if config.get("min_new_tokens") is not None:
        least = int(config["min_new_tokens"])
    else:
        least = max(0, int(config.get("min_length") or 0) - start) if encoder_decoder else 0
    return most, min(least, most)


def read_generation_settings(directory: str | Path, encoder_decoder: bool) -> GenerationSettings | None:
    """The folder's `generation_config.json` as settings (transformers' defaults for what it leaves out), or
    None when the folder has none."""
    path = Path(directory) / GENERATION_CONFIG_NAME
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if config.get("do_sample"):
        logger.warning("%s asks for sampling; mixkit decodes greedily or with beams", path)
    most, least = _new_tokens(config, encoder_decoder, path)
    return GenerationSettings(
        num_beams=int(config.get("num_beams") or 1),
        max_new_tokens=most,
        min_new_tokens=least,
        length_penalty=float(config.get("length_penalty", 1.0)),
        repetition_penalty=float(config.get("repetition_penalty", 1.0)),
    )
