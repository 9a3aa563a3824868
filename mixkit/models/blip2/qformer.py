"""The Q-Former: a BERT-style transformer whose learned queries read the image through cross-attention.

Key names follow `transformers`' `Blip2QFormerModel` (`attention.attention.query`, `crossattention.*`,
`intermediate_query`, ...). Queries and text share self-attention but have separate feed-forward blocks; only
query positions cross-attend to the image, every `cross_attention_frequency` layers. Text runs alone (ITC),
with the queries under a bidirectional mask (ITM), or after the queries under a causal mask reusing the
queries' cached keys and values (ITG).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerConfig
from transformers.activations import ACT2FN

from mixkit.models.blip2.checkpointing import maybe_checkpoint

KeyValue = tuple[torch.Tensor, torch.Tensor]


class MultiHeadAttention(nn.Module):
    def __init__(self, config: Blip2QFormerConfig, is_cross_attention: bool):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        source_size = config.encoder_hidden_size if is_cross_attention else config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(source_size, config.hidden_size)
        self.value = nn.Linear(source_size, config.hidden_size)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        source: torch.Tensor,
        mask: torch.Tensor | None,
        past: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        """Attend from `hidden_states` to `source` (plus `past` keys/values, which come first).

        `mask` is boolean, broadcastable to [batch, heads, queries, keys]; True means "may attend".
        Returns the merged-head output and this call's own keys/values (for caching).
        """
        query = self._heads(self.query(hidden_states))
        key, value = self._heads(self.key(source)), self._heads(self.value(source))
        own = (key, value)
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
        batch, _, length, _ = attended.shape
        return attended.transpose(1, 2).reshape(batch, length, -1), own


class AddNorm(nn.Module):
    """Dense + dropout + residual + LayerNorm (BERT's `*Output` blocks)."""

    def __init__(self, in_size: int, config: Blip2QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class AttentionBlock(nn.Module):
    def __init__(self, config: Blip2QFormerConfig, is_cross_attention: bool = False):
        super().__init__()
        self.attention = MultiHeadAttention(config, is_cross_attention)
        self.output = AddNorm(config.hidden_size, config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        source: torch.Tensor,
        mask: torch.Tensor | None,
        past: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        attended, own = self.attention(hidden_states, source, mask, past)
        return self.output(attended, hidden_states), own


class Intermediate(nn.Module):
    def __init__(self, config: Blip2QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states))


class QFormerLayer(nn.Module):
    def __init__(self, config: Blip2QFormerConfig, layer_index: int, text_ffn: bool | None = None):
        """`text_ffn`: build the text feed-forward blocks (default: `config.use_qformer_text_input`; InstructBLIP's
        Q-Former always has them and its config has no such flag)."""
        super().__init__()
        self.attention = AttentionBlock(config)
        self.has_cross_attention = layer_index % config.cross_attention_frequency == 0
        if self.has_cross_attention:
            self.crossattention = AttentionBlock(config, is_cross_attention=True)
        self.has_text_ffn = config.use_qformer_text_input if text_ffn is None else text_ffn
        if self.has_text_ffn:
            self.intermediate = Intermediate(config)
            self.output = AddNorm(config.intermediate_size, config)
        self.intermediate_query = Intermediate(config)
        self.output_query = AddNorm(config.intermediate_size, config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_mask: torch.Tensor | None,
        query_length: int,
        image_embeds: torch.Tensor | None,
        past: KeyValue | None,
    ) -> tuple[torch.Tensor, KeyValue]:
        attended, own = self.attention(hidden_states, hidden_states, self_mask, past)
        queries, text = attended[:, :query_length], attended[:, query_length:]
        parts = []
        if query_length > 0:
            if self.has_cross_attention:
                if image_embeds is None:
                    raise ValueError("queries need image_embeds: this layer cross-attends to the image")
                queries, _ = self.crossattention(queries, image_embeds, None)
            parts.append(self.output_query(self.intermediate_query(queries), queries))
        if text.shape[1] > 0:
            if not self.has_text_ffn:
                raise ValueError("this Q-Former has no text feed-forward blocks (use_qformer_text_input=False)")
            parts.append(self.output(self.intermediate(text), text))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0], own


@dataclass
class QFormerOutput:
    last_hidden_state: torch.Tensor
    # Per layer, the self-attention keys/values of this call's positions (only when asked for).
    key_values: list[KeyValue] | None = None


class QFormer(nn.Module):
    """Input LayerNorm (LAVIS's embedding LayerNorm) and the layer stack. Embedding lookup lives outside."""

    def __init__(self, config: Blip2QFormerConfig, text_ffn: bool | None = None):
        super().__init__()
        self.config = config
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(QFormerLayer(config, i, text_ffn) for i in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def input_layernorm(self) -> nn.LayerNorm:
        """The LayerNorm over the input embeddings: `layernorm` in BLIP-2's layout (InstructBLIP's Q-Former keeps
        it under `embeddings.` and overrides this)."""
        return self.layernorm

    def forward(
        self,
        embeddings: torch.Tensor,
        *,
        query_length: int,
        self_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        past_key_values: list[KeyValue] | None = None,
        return_key_values: bool = False,
    ) -> QFormerOutput:
        """Run the stack over `embeddings` = [queries (query_length positions); text].

        `self_mask`: boolean [batch, 1, length, past + length] (True = may attend); None = attend everywhere.
        `past_key_values`: per-layer keys/values of earlier positions (the queries, for ITG) that every
        position may attend to as permitted by `self_mask`.
        """
        norm = self.input_layernorm()
        hidden_states = self.dropout(norm(embeddings.to(norm.weight.dtype)))
        if image_embeds is not None:
            image_embeds = image_embeds.to(hidden_states.dtype)
        checkpoint = self.gradient_checkpointing and self.training
        key_values = []
        for index, layer in enumerate(self.encoder.layer):
            past = past_key_values[index] if past_key_values is not None else None
            hidden_states, own = maybe_checkpoint(
                layer, hidden_states, self_mask, query_length, image_embeds, past, enabled=checkpoint
            )
            key_values.append(own)
        return QFormerOutput(hidden_states, key_values if return_key_values else None)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, keys] 0/1 -> boolean [batch, 1, 1, keys]: every position may attend to every non-pad key."""
    return attention_mask.bool()[:, None, None, :]


def causal_text_mask(text_mask: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """ITG mask for text positions: all `prefix_length` query keys, then earlier-or-same, non-pad text.

    Returns boolean [batch, 1, text, prefix + text].
    """
    batch, length = text_mask.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()
    text_keys = causal[None] & text_mask.bool()[:, None, :]
    prefix = torch.ones(batch, length, prefix_length, dtype=torch.bool, device=text_mask.device)
    return torch.cat([prefix, text_keys], dim=-1)[:, None]
