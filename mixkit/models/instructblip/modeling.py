"""InstructBLIP: BLIP-2 whose Q-Former also reads the instruction, so the queries extract what it asks for.

Built on mixkit's BLIP-2 parts (EVA ViT, Q-Former, projection, LLM, generation). The one difference from BLIP-2:
the instruction's tokens (the Q-Former's BERT tokenizer) enter the Q-Former beside the learned queries, under a
bidirectional padding mask; only the query positions cross-attend to the image and only their outputs are
projected into the LLM (LAVIS `blip2_vicuna_instruct.py` / `blip2_t5_instruct.py`, commit 506965b, `forward` and
`generate`). The same instruction is the LLM prompt.

Key names follow `transformers`' `InstructBlipForConditionalGeneration` (its Q-Former keeps the input LayerNorm
and the word/position embeddings under `qformer.embeddings.`), so Hub folders load unchanged and folders saved
here load in `transformers`. As for BLIP-2, the LLM text carries no `<image>` placeholders: the projected queries
are placed in front of the prompt's embeddings here.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import InstructBlipConfig, InstructBlipQFormerConfig

from mixkit.models.blip2.modeling import Blip2Model, TextEmbeddings
from mixkit.models.blip2.qformer import QFormer, padding_mask


class InstructQFormerEmbeddings(TextEmbeddings):
    """Word + position embeddings of the instruction, and the input LayerNorm that `QFormer` applies to
    [queries; instruction] (`qformer.embeddings.{word_embeddings,position_embeddings,layernorm}`)."""

    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__(config.vocab_size, config.hidden_size, config.max_position_embeddings, config.pad_token_id)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class InstructQFormer(QFormer):
    """BLIP-2's Q-Former with text feed-forward blocks in every layer and its own text embeddings."""

    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__(config, text_ffn=True)
        del self.layernorm  # it lives under `embeddings.` in this layout
        self.embeddings = InstructQFormerEmbeddings(config)

    def input_layernorm(self) -> nn.LayerNorm:
        return self.embeddings.layernorm


class InstructBlipModel(Blip2Model):
    """InstructBLIP with a decoder-only (Vicuna/Llama, OPT) or encoder-decoder (Flan-T5) LLM. `forward` and
    `generate` are BLIP-2's and take the instruction's Q-Former tokens as the keywords `qformer_input_ids` and
    `qformer_attention_mask` (see `query_features`)."""

    config: InstructBlipConfig
    architecture = "InstructBlipForConditionalGeneration"
    config_class = InstructBlipConfig
    qformer_class = InstructQFormer
    query_input_names = ("qformer_input_ids", "qformer_attention_mask")

    def query_features(self, image_embeds: torch.Tensor, qformer_input_ids: torch.Tensor | None = None,
                       qformer_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The queries after reading the image and the instruction: [batch, num_query_tokens, hidden]."""
        if qformer_input_ids is None:
            raise ValueError("InstructBLIP's Q-Former needs the instruction: pass qformer_input_ids")
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        if qformer_attention_mask is None:
            qformer_attention_mask = torch.ones_like(qformer_input_ids)
        text = self.qformer.embeddings(qformer_input_ids).to(queries.dtype)
        query_mask = torch.ones(queries.shape[:2], dtype=qformer_attention_mask.dtype, device=queries.device)
        mask = padding_mask(torch.cat([query_mask, qformer_attention_mask], dim=1))
        hidden = self.qformer(torch.cat([queries, text], dim=1), query_length=queries.shape[1], self_mask=mask,
                              image_embeds=image_embeds).last_hidden_state
        return hidden[:, : queries.shape[1]]


__all__ = ["InstructBlipModel", "InstructQFormer"]
