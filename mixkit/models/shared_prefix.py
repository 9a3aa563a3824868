"""Beam search attention over a prefix shared by the beams of each row ("cascade" attention).

In BLIP-2 beam search all beams of an image start from the same prefix: 32 query tokens and the prompt. With
`transformers`' caches every beam holds its own copy of the prefix's keys and values, each decoding step reads
all of them, and every beam reorder copies them. Here the prefix's keys and values are kept once per row and
only the generated positions per beam:

- `SharedPrefixCache` stores the prefix as the shared prefill computed it (`Blip2Model._shared_prefill`);
  `batch_repeat_interleave(num_beams)` only records the group size; generated positions go to per-beam
  `PreallocatedLayer` storage, and a beam reorder moves only those (beams never leave their row).
- `shared_prefix_attention` (registered with `transformers`' `AttentionInterface`, used only while a
  `SharedPrefixCache` generates) scores each beam's query against its row's prefix (the beams of a row as one
  batched product) and against its own generated positions, and takes one softmax over both parts: the same
  attention as over the concatenated keys, up to fp32 summation order.

Used for decoder-only LLMs whose attention layers call the attention interface right after the cache update
(`SHARED_PREFIX_LANGUAGE_MODELS`); ids are checked equal to `DynamicCache` generation in
tests/models/test_shared_prefix.py.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from mixkit.models.kv_cache import PreallocatedLayer, SpareBuffer

ATTENTION_NAME = "mixkit_shared_prefix"
# LLMs whose attention is `cache.update` then `attention_interface(module, query, key, value, mask, ...)`.
SHARED_PREFIX_LANGUAGE_MODELS = frozenset({"OPTForCausalLM", "LlamaForCausalLM"})

_ACTIVE_CACHE: contextvars.ContextVar[SharedPrefixCache | None] = contextvars.ContextVar(
    "mixkit_shared_prefix_cache", default=None)


class SharedPrefixLayer(DynamicLayer):
    """One layer: the prefix `[rows, heads, prefix, head_dim]` and the generated positions
    `[rows * group, heads, generated, head_dim]`. Before `batch_repeat_interleave` the layer is a plain cache
    of the prefix (the shared prefill runs through it)."""

    def __init__(self, capacity: int, spare: SpareBuffer):
        super().__init__()
        self.prefix: tuple[torch.Tensor, torch.Tensor] | None = None
        self.group = 0  # beams per row; 0 while the prefix is being filled
        self.generated = PreallocatedLayer(capacity, spare)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if not self.group:
            if self.prefix is not None:
                key_states = torch.cat([self.prefix[0], key_states], dim=-2)
                value_states = torch.cat([self.prefix[1], value_states], dim=-2)
            self.prefix = (key_states, value_states)
            self.keys, self.values = self.prefix
            return self.prefix
        self.keys, self.values = self.generated.update(key_states, value_states)
        return self.keys, self.values

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else self.prefix[0].shape[-2]

    def get_seq_length(self) -> int:
        return self.prefix_length + self.generated.get_seq_length()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.group:
            raise RuntimeError("the shared prefix is already expanded to beams")
        self.group = repeats

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Only the generated positions move (`SharedPrefixCache.reorder_cache` checks that beams stay in
        their rows, once for all layers)."""
        self.generated.reorder_cache(beam_idx)
        if self.generated.get_seq_length():
            self.keys, self.values = self.generated.keys, self.generated.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("SharedPrefixCache serves beam search only")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("SharedPrefixCache serves beam search only")

    def full_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix (repeated to the beams) and generated positions as one tensor each: the fallback's input."""
        parts = []
        for index in range(2):
            prefix = self.prefix[index].repeat_interleave(self.group, dim=0)
            generated = (self.generated.keys, self.generated.values)[index]
            parts.append(prefix if generated is None else torch.cat([prefix, generated], dim=-2))
        return parts[0], parts[1]


class SharedPrefixCache(Cache):
    """A cache of `SharedPrefixLayer`s; `capacity` plans the generated positions per beam."""

    def __init__(self, num_layers: int, capacity: int):
        spare = SpareBuffer()
        super().__init__(layers=[SharedPrefixLayer(capacity, spare) for _ in range(num_layers)])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        group = self.layers[0].group
        rows = torch.arange(beam_idx.numel(), device=beam_idx.device) // group
        if not torch.equal(beam_idx // group, rows):
            raise RuntimeError("a beam reorder moved a beam to another row; the shared prefix cannot follow it")
        super().reorder_cache(beam_idx)


def shared_prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0,
                            scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """`sdpa_attention_forward`'s contract (output `[batch, query, heads, head_dim]`), computed over the active
    `SharedPrefixCache` layer's prefix and generated positions. Outside such a cache, or for the prefill, it is
    `sdpa_attention_forward` itself."""
    cache = _ACTIVE_CACHE.get()
    layer = None if cache is None else cache.layers[module.layer_idx]
    if layer is None or not layer.group:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[-2] != 1 or dropout:  # several new positions per beam: the plain path over materialised states
        full_key, full_value = layer.full_states()
        return sdpa_attention_forward(module, query, full_key, full_value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    return _cascade(query, layer, attention_mask, query.shape[-1] ** -0.5 if scaling is None else scaling)


def _cascade(query: torch.Tensor, layer: SharedPrefixLayer, attention_mask: torch.Tensor | None,
             scaling: float) -> tuple[torch.Tensor, None]:
    beams, heads, _, head_dim = query.shape  # one query position per beam
    group, prefix_length = layer.group, layer.prefix_length
    rows = beams // group
    prefix_key, prefix_value = (_repeat_heads(part, heads) for part in layer.prefix)
    # [rows, heads, group, head_dim]: a row's beams as the query positions of one product with its prefix.
    grouped = query.view(rows, group, heads, head_dim).transpose(1, 2)
    prefix_scores = torch.matmul(grouped, prefix_key.transpose(-1, -2)) * scaling  # [rows, heads, group, prefix]
    prefix_scores = prefix_scores.transpose(1, 2).reshape(beams, heads, 1, prefix_length)
    scores = prefix_scores
    generated_key = layer.generated.keys if layer.generated.get_seq_length() else None
    if generated_key is not None:
        generated_key, generated_value = (_repeat_heads(part, heads)
                                          for part in (layer.generated.keys, layer.generated.values))
        scores = torch.cat([prefix_scores, torch.matmul(query, generated_key.transpose(-1, -2)) * scaling], dim=-1)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., -scores.shape[-1]:], float("-inf"))
        else:
            scores = scores + attention_mask[..., -scores.shape[-1]:]
    weights = scores.softmax(dim=-1)
    prefix_weights = weights[..., :prefix_length].reshape(rows, group, heads, prefix_length).transpose(1, 2)
    output = torch.matmul(prefix_weights, prefix_value).transpose(1, 2).reshape(beams, heads, 1, head_dim)
    if generated_key is not None:
        output = output + torch.matmul(weights[..., prefix_length:], generated_value)
    return output.transpose(1, 2).contiguous(), None


def _repeat_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """Grouped-query attention's key/value heads repeated to the query heads (a no-op without grouping)."""
    repeats = heads // states.shape[1]
    return states if repeats == 1 else states.repeat_interleave(repeats, dim=1)


AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def supports_shared_prefix(language_model: nn.Module) -> bool:
    """Decoder-only LLMs of a known attention layout running on SDPA (the attention this replaces)."""
    config = language_model.config
    return (type(language_model).__name__ in SHARED_PREFIX_LANGUAGE_MODELS
            and getattr(config, "_attn_implementation", None) == "sdpa")


@contextlib.contextmanager
def generating_with(language_model: nn.Module, cache: SharedPrefixCache) -> Iterator[None]:
    """While inside, `language_model` attends through `shared_prefix_attention` over `cache`."""
    config = language_model.config
    previous = config._attn_implementation
    token = _ACTIVE_CACHE.set(cache)
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _ACTIVE_CACHE.reset(token)
