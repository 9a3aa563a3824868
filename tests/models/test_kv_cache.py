"""`PreallocatedCache` holds exactly what `transformers`' `DynamicCache` holds after every operation generation
uses (append, beam reorder, repeat, select, crop, growth past the plan), and BLIP-2 generation with it gives
the ids of generation with `DynamicCache`, greedy and with beams."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from mixkit.data.tokenizers import train_opt_tokenizer
from mixkit.models.blip2.modeling import Blip2Model, _cache_keyword
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.models.kv_cache import PreallocatedCache, PreallocatedLayer, SpareBuffer
from mixkit.testing import DEFAULT_TEXTS, randomize_


def states(generator: torch.Generator, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 2, length, 4, generator=generator), torch.randn(batch, 2, length, 4, generator=generator)


def assert_same(ours: PreallocatedLayer, theirs: DynamicLayer) -> None:
    assert ours.get_seq_length() == theirs.get_seq_length()
    assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


@pytest.mark.parametrize("capacity", [0, 3, 64])  # 0 and 3: the storage must grow
def test_layer_holds_what_dynamic_layer_holds(capacity: int) -> None:
    generator = torch.Generator().manual_seed(0)
    spare = SpareBuffer()
    ours, theirs, neighbour = PreallocatedLayer(capacity, spare), DynamicLayer(), PreallocatedLayer(capacity, spare)
    for length in (5, 1, 1):
        keys, values = states(generator, 3, length)
        returned = ours.update(keys, values)
        expected = theirs.update(keys, values)
        assert all(torch.equal(a, b) for a, b in zip(returned, expected))
        neighbour.update(*states(generator, 3, length))  # shares the spare buffer
    assert_same(ours, theirs)
    ours.batch_repeat_interleave(4), theirs.batch_repeat_interleave(4)
    neighbour.batch_repeat_interleave(4)
    assert_same(ours, theirs)
    for beam_idx in (torch.tensor([3, 3, 0, 1, 5, 5, 5, 2, 8, 9, 11, 10]), torch.arange(12).flip(0)):
        snapshot = neighbour.keys.clone()
        ours.reorder_cache(beam_idx), theirs.reorder_cache(beam_idx)
        assert_same(ours, theirs)
        assert torch.equal(neighbour.keys, snapshot), "a reorder must not touch another layer's storage"
        neighbour.reorder_cache(beam_idx)
        keys, values = states(generator, 12, 1)
        ours.update(keys, values), theirs.update(keys, values)
        assert_same(ours, theirs)
    ours.batch_select_indices(torch.tensor([0, 4, 7])), theirs.batch_select_indices(torch.tensor([0, 4, 7]))
    assert_same(ours, theirs)
    ours.crop(-2), theirs.crop(-2)
    assert_same(ours, theirs)
    with pytest.raises(ValueError, match="negative"):
        ours.crop(3)


def test_storage_is_planned_once_and_reorders_allocate_nothing_new() -> None:
    generator = torch.Generator().manual_seed(1)
    cache = PreallocatedCache(num_layers=2, capacity=10)
    for layer_idx in range(2):
        cache.update(*states(generator, 4, 6), layer_idx)
    seen = set()
    for _ in range(3):
        for layer_idx in range(2):
            cache.update(*states(generator, 4, 1), layer_idx)
            assert cache.layers[layer_idx].capacity == 10
        cache.reorder_cache(torch.tensor([1, 1, 0, 3]))
        seen |= {ptr for layer in cache.layers for ptr in (layer.keys.data_ptr(), layer.values.data_ptr())}
    assert len(seen) == 5, "the 4 parts of storage and one spare buffer, rotating"
    assert cache.get_seq_length() == 9


@pytest.fixture(scope="module")
def model_and_prompts(tmp_path_factory):
    tokenizer = train_opt_tokenizer(DEFAULT_TEXTS, tmp_path_factory.mktemp("tok"), vocab_size=300)
    model = randomize_(Blip2Model(tiny_blip2_config("opt", vocab_size=len(tokenizer))), seed=5, std=0.15).eval()
    prompts = tokenizer(["a", "a large red", "Question: what colour is it? Short answer:"], padding=True,
                        padding_side="left", return_tensors="pt")
    return model, prompts


@pytest.mark.parametrize("settings", [
    dict(num_beams=1, max_new_tokens=9, min_new_tokens=9),
    dict(num_beams=4, max_new_tokens=8, min_new_tokens=2, length_penalty=1.0),
    dict(num_beams=3, max_length=7, min_new_tokens=0, length_penalty=0.0),  # no plan: the cache grows
    dict(num_beams=3, max_new_tokens=6, repetition_penalty=1.5),
])
def test_generation_matches_dynamic_cache(model_and_prompts, settings) -> None:
    model, prompts = model_and_prompts
    if "max_length" in settings:  # counted from the start of the LLM's input: queries + prompt
        settings = {**settings, "max_length": settings["max_length"] + model.config.num_query_tokens
                    + prompts.input_ids.shape[1]}
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours = model.generate(pixels, prompts.input_ids, prompts.attention_mask, **settings)
    keyword = _cache_keyword(model.language_model)
    theirs = model.generate(pixels, prompts.input_ids, prompts.attention_mask, share_prefill=False,
                            **{keyword: DynamicCache()}, **settings)
    assert ours.tolist() == theirs.tolist()
    assert len({tuple(row) for row in ours.tolist()}) > 1, "identical rows would make this comparison weak"
