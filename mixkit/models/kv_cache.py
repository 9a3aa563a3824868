"""A key/value cache for decoder-only generation that writes in place.

`transformers`' `DynamicCache` grows by `torch.cat` at every step (a new tensor holding the whole cache, per layer,
for keys and values) and beam search reorders it with `index_select` into yet another new tensor: two full copies
and two large allocations per layer and step. `PreallocatedCache` keeps each layer's keys and values in storage
sized for the whole generation: a step writes only its new positions, and a beam reorder gathers into a second,
buffer and swaps the two; that spare buffer is one per cache, passed from layer to layer (each layer's old
storage becomes the next layer's target), so the reorder allocates nothing and the cache holds one layer part
more than its contents. The tensors attention sees hold the same numbers as
`DynamicCache`'s, so generated ids are identical (tests/models/test_kv_cache.py).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class SpareBuffer:
    """One free tensor shared by a cache's layers for beam reorders: `swap(source)` hands out a free tensor
    shaped like `source` (reused if the shape matches) and keeps `source`, which the caller is about to replace,
    as the next free one."""

    def __init__(self):
        self._free: torch.Tensor | None = None

    def swap(self, source: torch.Tensor) -> torch.Tensor:
        free = self._free
        if free is None or free.shape != source.shape or free.dtype != source.dtype or free.device != source.device:
            free = torch.empty_like(source)
        self._free = source
        return free


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values, `[batch, heads, capacity, head_dim]` storage of which the first `length`
    positions are filled; `keys` / `values` are views of them. Storage grows (doubling) if a generation runs past
    the planned capacity."""

    def __init__(self, capacity: int = 0, spare: SpareBuffer | None = None):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._storage: tuple[torch.Tensor, torch.Tensor] | None = None
        self._spare = spare or SpareBuffer()

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True
        self._allocate(key_states, value_states, max(self.capacity, key_states.shape[-2]))

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        def buffer(states: torch.Tensor) -> torch.Tensor:
            return states.new_empty((*states.shape[:-2], capacity, states.shape[-1]))

        old = self._storage
        self._storage, self.capacity = (buffer(key_states), buffer(value_states)), capacity
        if old is not None and self.length:
            for new_part, old_part in zip(self._storage, old):
                new_part[..., : self.length, :].copy_(old_part[..., : self.length, :])

    def _publish(self) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._storage
        self.keys, self.values = keys[..., : self.length, :], values[..., : self.length, :]
        return self.keys, self.values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._allocate(key_states, value_states, max(end, 2 * self.capacity))
        self._storage[0][..., self.length : end, :].copy_(key_states)
        self._storage[1][..., self.length : end, :].copy_(value_states)
        self.length = end
        return self._publish()

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if not self.length:
            return
        index = beam_idx.to(self.device)
        reordered = []
        for source in self._storage:
            target = self._spare.swap(source)
            torch.index_select(source[..., : self.length, :], 0, index, out=target[..., : self.length, :])
            reordered.append(target)
        self._storage = tuple(reordered)
        self._publish()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._replace_rows(lambda part: part.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._replace_rows(lambda part: part[indices, ...])

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove and self.is_initialized:
            self.length = max(0, self.length + tokens_to_remove)
            self._publish()

    def _replace_rows(self, rows) -> None:
        """New storage of the same capacity holding `rows(filled part)` (a repeat or a selection of rows)."""
        keys, values = (rows(part[..., : self.length, :]) for part in self._storage)
        length, self.length = self.length, 0
        self._storage = None
        self._allocate(keys, values, self.capacity)
        self.length = length
        self._storage[0][..., :length, :].copy_(keys)
        self._storage[1][..., :length, :].copy_(values)
        self._publish()

    def reset(self) -> None:
        self.length = 0
        self._storage = None
        super().reset()


class PreallocatedCache(DynamicCache):
    """A `DynamicCache` of `PreallocatedLayer`s, each planned for `capacity` positions (prompt + new tokens)."""

    def __init__(self, num_layers: int, capacity: int):
        # `Cache`'s constructor, not `DynamicCache`'s: a fixed list of layers instead of `DynamicLayer`s made on
        # first use.
        spare = SpareBuffer()
        Cache.__init__(self, layers=[PreallocatedLayer(capacity, spare) for _ in range(num_layers)])
