"""`transformers`' `generate` (greedy, beams, lengths, penalties) over mixkit's BLIP text decoder.

`transformers` runs its search loops only on a `PreTrainedModel` with `GenerationMixin`; mixkit's decoder is a
plain module. `DecoderGenerator` wraps it without copying a weight: its forward runs the decoder on the new
positions and keeps the self-attention keys/values in the `Cache` object that `generate` owns (so beam search
reorders them itself). The image (or encoded question) arrives as `encoder_hidden_states`, exactly as
`transformers`' `BlipTextLMHeadModel.generate` receives it, so the search is the same code on the same numbers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers import BlipTextConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

from mixkit.models.blip.text import TextDecoder


@dataclass
class DecoderStepOutput(ModelOutput):
    logits: torch.Tensor | None = None
    # Under both names: newer `transformers` 5.x reads `cache`, earlier releases `past_key_values`.
    cache: Cache | None = None
    past_key_values: Cache | None = None


# What `generate` passes the cache as (and reads it back from): `cache` in newer 5.x, `past_key_values` before.
CACHE_KEYWORD = "cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters \
    else "past_key_values"


class DecoderGenerator(PreTrainedModel, GenerationMixin):
    config_class = BlipTextConfig
    main_input_name = "input_ids"
    _supports_cache_class = True

    def __init__(self, decoder: TextDecoder):
        super().__init__(decoder.config)
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None, cache: Cache | None = None,
                past_key_values: Cache | None = None, use_cache: bool | None = None,
                **_: Any) -> DecoderStepOutput:
        cache = cache if cache is not None else past_key_values
        past_length = cache.get_seq_length() if cache is not None else 0
        past = [(layer.keys, layer.values) for layer in cache.layers] if past_length > 0 else None
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape[0], past_length + input_ids.shape[1], dtype=torch.long,
                                        device=input_ids.device)
        logits, own = self.decoder(input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, past)
        if cache is not None:
            for index, (key, value) in enumerate(own):
                cache.update(key, value, index)
        return DecoderStepOutput(logits=logits, **{CACHE_KEYWORD: cache})
