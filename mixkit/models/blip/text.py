"""BLIP's BERT: one text transformer that serves as text encoder (ITC), image-grounded encoder (ITM, VQA
question) and image-grounded causal decoder (captions, answers).

Key names follow `transformers`' `BlipTextModel` / `BlipTextLMHeadModel` (`embeddings.LayerNorm`,
`encoder.layer.N.attention.self.query`, `crossattention.output.dense`, `cls.predictions.transform.*`), so Hub
folders load unchanged. The attention, add-norm and feed-forward blocks are the Q-Former's
(`mixkit.models.blip2.qformer`). The Q-Former itself cannot serve as this BERT: in it only the learned queries
cross-attend to the image and text positions never do, whereas every BLIP text position cross-attends to the
image in every layer; its text blocks also sit beside query blocks that BLIP does not have.

Masks are boolean (True = may attend), as `scaled_dot_product_attention` takes them.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BlipTextConfig

from mixkit.models.blip2.checkpointing import maybe_checkpoint
from mixkit.models.blip2.qformer import AddNorm, Intermediate, KeyValue, MultiHeadAttention, padding_mask
from mixkit.models.blip2.stage1 import TiedLMHead


class TextEmbeddings(nn.Module):
    """Word + learned position embeddings, then LayerNorm and dropout (BERT without token types)."""

    def __init__(self, config: BlipTextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, past_length: int = 0) -> torch.Tensor:
        positions = torch.arange(past_length, past_length + input_ids.shape[1], device=input_ids.device)
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.dropout(self.LayerNorm(embeddings))


class BertAttention(nn.Module):
    """Attention + add-norm under BERT's names (`self`, `output`)."""

    def __init__(self, config: BlipTextConfig, is_cross_attention: bool = False):
        super().__init__()
        self.self = MultiHeadAttention(config, is_cross_attention)
        self.output = AddNorm(config.hidden_size, config)

    def forward(self, hidden_states: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None,
                past: KeyValue | None = None) -> tuple[torch.Tensor, KeyValue]:
        attended, own = self.self(hidden_states, source, mask, past)
        return self.output(attended, hidden_states), own


class TextLayer(nn.Module):
    """Self-attention, cross-attention to the image (or question) when given one, feed-forward."""

    def __init__(self, config: BlipTextConfig):
        super().__init__()
        self.attention = BertAttention(config)
        # `transformers` builds the cross-attention when `is_decoder` (its default, and every BLIP checkpoint's).
        if config.is_decoder:
            self.crossattention = BertAttention(config, is_cross_attention=True)
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config.intermediate_size, config)

    def forward(self, hidden_states: torch.Tensor, self_mask: torch.Tensor | None, source: torch.Tensor | None,
                source_mask: torch.Tensor | None, past: KeyValue | None) -> tuple[torch.Tensor, KeyValue]:
        hidden_states, own = self.attention(hidden_states, hidden_states, self_mask, past)
        if source is not None:
            if not hasattr(self, "crossattention"):
                raise ValueError("this text model has no cross-attention (text_config.is_decoder=False)")
            hidden_states, _ = self.crossattention(hidden_states, source, source_mask)
        return self.output(self.intermediate(hidden_states), hidden_states), own


class TextModel(nn.Module):
    """Embeddings and the layer stack (`BlipTextModel` without the pooler, as every BLIP head builds it)."""

    def __init__(self, config: BlipTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(TextLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        causal: bool = False,
        past_key_values: list[KeyValue] | None = None,
    ) -> tuple[torch.Tensor, list[KeyValue]]:
        """Hidden states [batch, length, hidden] and each layer's self-attention keys/values of these positions.

        `attention_mask` [batch, past + length] (0/1) covers the cached positions too; `source` is what the
        text cross-attends to (image patches, or the encoded question for VQA answers), `source_mask` its 0/1
        padding mask (None: all valid). `causal` makes each position see only earlier ones (the decoder).
        """
        past_length = past_key_values[0][0].shape[2] if past_key_values else 0
        hidden_states = self.embeddings(input_ids, past_length)
        if source is not None:
            source = source.to(hidden_states.dtype)
        self_mask = causal_mask(attention_mask, input_ids.shape[1]) if causal else padding_mask(attention_mask)
        cross_mask = padding_mask(source_mask) if source_mask is not None else None
        checkpoint = self.gradient_checkpointing and self.training
        key_values = []
        for index, layer in enumerate(self.encoder.layer):
            past = past_key_values[index] if past_key_values else None
            hidden_states, own = maybe_checkpoint(layer, hidden_states, self_mask, source, cross_mask, past,
                                                  enabled=checkpoint)
            key_values.append(own)
        return hidden_states, key_values


def causal_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """[batch, 1, length, keys]: the last `length` positions of `attention_mask` [batch, keys] each see every
    earlier-or-same non-pad key."""
    keys = attention_mask.shape[1]
    query_positions = torch.arange(keys - length, keys, device=attention_mask.device)
    earlier = torch.arange(keys, device=attention_mask.device)[None, :] <= query_positions[:, None]
    return (earlier[None] & attention_mask.bool()[:, None, :])[:, None]


class TextDecoder(nn.Module):
    """The causal LM: `bert` + `cls.predictions` whose output matrix is the word embeddings (tied, as in
    `transformers` and LAVIS) and whose bias is `cls.predictions.bias`."""

    def __init__(self, config: BlipTextConfig):
        super().__init__()
        self.config = config
        self.bert = TextModel(config)
        self.cls = nn.Module()
        self.cls.predictions = TiedLMHead(config.hidden_size, config.vocab_size, config.hidden_act,
                                          config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, source: torch.Tensor,
                source_mask: torch.Tensor | None = None,
                past_key_values: list[KeyValue] | None = None) -> tuple[torch.Tensor, list[KeyValue]]:
        """Next-token logits [batch, length, vocab] and the self-attention keys/values of these positions."""
        hidden, key_values = self.bert(input_ids, attention_mask, source=source, source_mask=source_mask,
                                       causal=True, past_key_values=past_key_values)
        return self.cls.predictions(hidden, self.bert.embeddings.word_embeddings.weight), key_values
