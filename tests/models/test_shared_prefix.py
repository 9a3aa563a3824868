"""Shared-prefix ("cascade") beam attention: the numbers of SDPA over the concatenated keys and values, the ids of
`DynamicCache` generation for OPT and Llama LLMs with left-padded prompts of different lengths, and the LLM's
own attention back in place after every generation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.cache_utils import DynamicCache

import mixkit.models.shared_prefix as shared_prefix
from mixkit.models.blip2.modeling import Blip2Model, _cache_keyword
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.models.instructblip.modeling import InstructBlipModel
from mixkit.models.instructblip.tiny import tiny_instructblip_config
from mixkit.models.shared_prefix import SharedPrefixCache, shared_prefix_attention
from mixkit.testing import randomize_


def filled_layer(rows: int, group: int, kv_heads: int, prefix: int, generated: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    cache = SharedPrefixCache(num_layers=1, capacity=4)
    cache.update(torch.randn(rows, kv_heads, prefix, 8, generator=generator),
                 torch.randn(rows, kv_heads, prefix, 8, generator=generator), 0)
    cache.batch_repeat_interleave(group)
    for _ in range(generated):  # grows past the planned 4 positions too
        cache.update(torch.randn(rows * group, kv_heads, 1, 8, generator=generator),
                     torch.randn(rows * group, kv_heads, 1, 8, generator=generator), 0)
    return cache


@pytest.mark.parametrize("generated", [0, 1, 6])
@pytest.mark.parametrize("kv_heads", [4, 2])  # 2: grouped-query attention, as Llama-style LLMs may use
@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_attention_equals_sdpa_over_concatenated_states(generated: int, kv_heads: int, mask_kind) -> None:
    rows, group, heads, prefix = 3, 4, 4, 7
    cache = filled_layer(rows, group, kv_heads, prefix, generated)
    layer = cache.layers[0]
    query = torch.randn(rows * group, heads, 1, 8, generator=torch.Generator().manual_seed(9))
    keys, values = layer.full_states()
    assert keys.shape[-2] == prefix + generated
    mask = None
    if mask_kind:
        # Row 1's prefix starts with two pads, row 2's with one (left padding), the same for all its beams.
        allowed = torch.ones(rows * group, 1, 1, prefix + generated, dtype=torch.bool)
        allowed[group : 2 * group, ..., :2] = False
        allowed[2 * group :, ..., :1] = False
        mask = allowed if mask_kind == "bool" else torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    module = nn.Module()
    module.layer_idx, module.num_key_value_groups, module.is_causal = 0, heads // kv_heads, True
    repeated = {"key": keys.repeat_interleave(heads // kv_heads, 1), "value": values.repeat_interleave(
        heads // kv_heads, 1)}
    expected = torch.nn.functional.scaled_dot_product_attention(query, **repeated, attn_mask=mask, scale=0.3)
    token = shared_prefix._ACTIVE_CACHE.set(cache)
    try:
        calls = []
        original = shared_prefix._cascade
        shared_prefix._cascade = lambda *args: calls.append(1) or original(*args)
        output, _ = shared_prefix_attention(module, query, layer.keys, layer.values, mask, scaling=0.3)
    finally:
        shared_prefix._cascade = original
        shared_prefix._ACTIVE_CACHE.reset(token)
    assert calls, "the cascade path must be the one under test"
    torch.testing.assert_close(output, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_reorder_moves_only_generated_positions_within_rows() -> None:
    cache = filled_layer(rows=2, group=3, kv_heads=2, prefix=5, generated=2)
    layer = cache.layers[0]
    prefix_before = layer.prefix[0].clone()
    generated_before = layer.generated.keys.clone()
    order = torch.tensor([2, 2, 0, 4, 3, 3])
    cache.reorder_cache(order)
    assert torch.equal(layer.prefix[0], prefix_before)
    assert torch.equal(layer.generated.keys, generated_before[order])
    with pytest.raises(RuntimeError, match="another row"):
        cache.reorder_cache(torch.tensor([3, 1, 2, 0, 4, 5]))


PROMPTS = torch.tensor([[1, 1, 2, 10], [2, 13, 14, 15], [1, 2, 20, 21]])  # 1 = pad: left-padded


def beam_models() -> dict[str, nn.Module]:
    blip2 = randomize_(Blip2Model(tiny_blip2_config("opt", vocab_size=100)), seed=7, std=0.15).eval()
    config = tiny_instructblip_config("llama")
    config.text_config.pad_token_id = 1
    llama = randomize_(InstructBlipModel(config), seed=8, std=0.15).eval()
    return {"opt": blip2, "llama": llama}


@pytest.fixture(scope="module")
def models():
    return beam_models()


@pytest.mark.parametrize("name", ["opt", "llama"])
@pytest.mark.parametrize("settings", [
    dict(num_beams=4, max_new_tokens=7, min_new_tokens=3, length_penalty=1.0),
    dict(num_beams=3, max_new_tokens=5, length_penalty=0.0, repetition_penalty=1.5),
])
def test_beam_ids_equal_dynamic_cache(models, name: str, settings, monkeypatch) -> None:
    model = models[name]
    mask = (PROMPTS != 1).long()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    extra = {}
    if name == "llama":
        extra = {"qformer_input_ids": torch.tensor([[5, 6, 7], [8, 9, 0], [5, 5, 5]]),
                 "qformer_attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])}
    calls = []
    original = shared_prefix._cascade
    monkeypatch.setattr(shared_prefix, "_cascade", lambda *args: calls.append(1) or original(*args))
    ours = model.generate(pixels, PROMPTS, mask, **extra, **settings)
    assert calls, "the shared-prefix attention must have run"
    keyword = _cache_keyword(model.language_model)
    theirs = model.generate(pixels, PROMPTS, mask, share_prefill=False, **{keyword: DynamicCache()}, **extra,
                            **settings)
    assert ours.tolist() == theirs.tolist()
    assert len({tuple(row) for row in ours.tolist()}) > 1, "identical rows would make this comparison weak"
    assert model.language_model.config._attn_implementation == "sdpa"


def test_attention_implementation_restored_after_an_error(models, monkeypatch) -> None:
    model = models["opt"]

    def failing(*args, **kwargs):
        raise RuntimeError("stop")

    monkeypatch.setattr(type(model.language_model), "generate", failing)
    with pytest.raises(RuntimeError, match="stop"):
        model.generate(torch.randn(1, 3, 32, 32), num_beams=2, max_new_tokens=2)
    assert model.language_model.config._attn_implementation == "sdpa"
    assert shared_prefix._ACTIVE_CACHE.get() is None


def test_several_new_positions_take_the_plain_path_over_all_states() -> None:
    rows, group, heads, prefix = 2, 3, 4, 5
    cache = filled_layer(rows, group, heads, prefix, generated=2)
    layer = cache.layers[0]
    query = torch.randn(rows * group, heads, 2, 8, generator=torch.Generator().manual_seed(4))
    keys, values = layer.full_states()
    allowed = torch.ones(rows * group, 1, 2, prefix + 2, dtype=torch.bool)
    allowed[..., 0, -1] = False  # the first new position does not see the second
    module = nn.Module()
    module.layer_idx, module.num_key_value_groups, module.is_causal = 0, 1, True
    token = shared_prefix._ACTIVE_CACHE.set(cache)
    try:
        output, _ = shared_prefix_attention(module, query, layer.keys, layer.values, allowed, scaling=0.5)
    finally:
        shared_prefix._ACTIVE_CACHE.reset(token)
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=allowed, scale=0.5)
    torch.testing.assert_close(output, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)
