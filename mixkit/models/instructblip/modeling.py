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

from typing import Any

import torch
from torch import nn
from transformers import InstructBlipConfig, InstructBlipQFormerConfig

from mixkit.models.blip2.modeling import Blip2LanguageInputs, Blip2Model, Blip2Output, TextEmbeddings
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
    """InstructBLIP with a decoder-only (Vicuna/Llama, OPT) or encoder-decoder (Flan-T5) LLM."""

    config: InstructBlipConfig
    architecture = "InstructBlipForConditionalGeneration"
    config_class = InstructBlipConfig
    qformer_class = InstructQFormer

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

    def project_queries(self, image_embeds: torch.Tensor, qformer_input_ids: torch.Tensor | None = None,
                        qformer_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        projected = self.language_projection(self.query_features(image_embeds, qformer_input_ids,
                                                                 qformer_attention_mask))
        return projected.to(self.language_model.get_input_embeddings().weight.dtype)

    def language_inputs(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, qformer_input_ids: torch.Tensor | None = None,
                        qformer_attention_mask: torch.Tensor | None = None) -> Blip2LanguageInputs:
        queries = self.project_queries(image_embeds, qformer_input_ids, qformer_attention_mask)
        return self.join_queries_and_text(queries, input_ids, attention_mask)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
    ) -> Blip2Output:
        """Next-token logits, as `Blip2Model.forward`, with the instruction's Q-Former tokens."""
        if image_embeds is None:
            image_embeds = self.encode_image(pixel_values)
        inputs = self.language_inputs(image_embeds, input_ids, attention_mask, qformer_input_ids,
                                      qformer_attention_mask)
        return self.language_model_output(inputs, decoder_input_ids, decoder_attention_mask)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        share_prefill: bool = True,
        **generation_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids only, right-padded (see `Blip2Model.generate`); decoder-only prompts left-padded."""
        if image_embeds is None:
            image_embeds = self.encode_image(pixel_values)
        input_ids, attention_mask = self.prompt_or_default(input_ids, attention_mask, image_embeds)
        inputs = self.language_inputs(image_embeds, input_ids, attention_mask, qformer_input_ids,
                                      qformer_attention_mask)
        return self.generate_from_inputs(inputs, share_prefill=share_prefill, **generation_kwargs)


__all__ = ["InstructBlipModel", "InstructQFormer"]
