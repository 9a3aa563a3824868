"""ALBEF's BERT: text layers, then fusion layers.

LAVIS (commit 506965b, `lavis/models/med.py` `BertLayer` / `BertEncoder`) builds a cross-attention block only in
layers `>= fusion_layer` and runs the stack in three modes: "text" (layers below `fusion_layer`, for ITC),
"fusion" (the rest, from given text states, reading the image: ITM) and "multimodal" (all of them: retrieval's
ITM re-rank, MLM, the VQA question). Here `text` and `fuse` are the first two and `forward` with a `source` the
third. The layers are BLIP's (`mixkit.models.blip.text.TextLayer`); the text-only ones are built from a copy of
the config with `is_decoder=False`, which is how that module decides to have no cross-attention, so the keys are
LAVIS's (`encoder.layer.N.crossattention.*` only for N >= fusion_layer).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import BlipTextConfig

from mixkit.models.blip.text import TextEmbeddings, TextLayer
from mixkit.models.blip2.checkpointing import maybe_checkpoint
from mixkit.models.blip2.qformer import padding_mask


def _with_cross_attention(config: BlipTextConfig, enabled: bool) -> BlipTextConfig:
    changed = copy.deepcopy(config)
    changed.is_decoder = enabled
    return changed


class FusionTextModel(nn.Module):
    """Embeddings and `num_hidden_layers` layers; those from `fusion_layer` on cross-attend to the image."""

    def __init__(self, config: BlipTextConfig, fusion_layer: int):
        super().__init__()
        self.config = config
        self.fusion_layer = fusion_layer
        self.embeddings = TextEmbeddings(config)
        text_only, fused = _with_cross_attention(config, False), _with_cross_attention(config, True)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(TextLayer(text_only if index < fusion_layer else fused)
                                           for index in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def _run(self, layers: nn.ModuleList, states: torch.Tensor, attention_mask: torch.Tensor,
             source: torch.Tensor | None, source_mask: torch.Tensor | None) -> torch.Tensor:
        self_mask = padding_mask(attention_mask)
        cross_mask = padding_mask(source_mask) if source_mask is not None else None
        checkpoint = self.gradient_checkpointing and self.training
        for layer in layers:
            states, _ = maybe_checkpoint(layer, states, self_mask, source, cross_mask, None, enabled=checkpoint)
        return states

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """LAVIS's "text" mode: [batch, length, hidden] after the text-only layers."""
        states = self.embeddings(input_ids)
        return self._run(self.encoder.layer[: self.fusion_layer], states, attention_mask, None, None)

    def fuse(self, text_states: torch.Tensor, attention_mask: torch.Tensor, source: torch.Tensor,
             source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """LAVIS's "fusion" mode: the fusion layers over `text_states`, cross-attending to `source`."""
        source = source.to(text_states.dtype)
        return self._run(self.encoder.layer[self.fusion_layer :], text_states, attention_mask, source, source_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, source: torch.Tensor | None = None,
                source_mask: torch.Tensor | None = None, causal: bool = False,
                past_key_values: list | None = None) -> tuple[torch.Tensor, list]:
        """BLIP's `TextModel` call: without `source` the "text" mode, with it "multimodal" (every layer). ALBEF's
        encoder is never causal and keeps no cache; the empty list stands for the key/values BLIP returns."""
        if causal or past_key_values:
            raise ValueError("ALBEF's text encoder is bidirectional: no causal mask, no cache")
        states = self.text(input_ids, attention_mask)
        if source is None:
            return states, []
        return self.fuse(states, attention_mask, source, source_mask), []


__all__ = ["FusionTextModel"]
