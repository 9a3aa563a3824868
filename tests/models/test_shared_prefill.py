"""Beam search with the shared prefix: the queries + prompt run once per row, not once per beam, and the
generated ids are exactly those of the plain path (mixed prompt lengths, left padding, length penalties)."""

from __future__ import annotations

import pytest
import torch

from mixkit.data.tokenizers import train_opt_tokenizer
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.testing import DEFAULT_TEXTS, randomize_


@pytest.fixture(scope="module")
def model_and_prompts(tmp_path_factory):
    tokenizer = train_opt_tokenizer(DEFAULT_TEXTS, tmp_path_factory.mktemp("tok"), vocab_size=300)
    model = randomize_(Blip2Model(tiny_blip2_config("opt", vocab_size=len(tokenizer))), seed=3, std=0.15)
    prompts = tokenizer(["a", "a large red", "Question: what colour is it? Short answer:"], padding=True,
                        padding_side="left", return_tensors="pt")
    return model, prompts


@pytest.mark.parametrize("settings", [
    dict(num_beams=3, max_new_tokens=8, min_new_tokens=2, length_penalty=1.0),
    dict(num_beams=5, max_new_tokens=6, min_new_tokens=0, length_penalty=0.0),
    dict(num_beams=4, max_new_tokens=7, min_new_tokens=7, length_penalty=-1.0),
])
def test_shared_prefill_gives_the_same_ids(model_and_prompts, settings) -> None:
    model, prompts = model_and_prompts
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    shared = model.generate(pixels, prompts.input_ids, prompts.attention_mask, **settings)
    plain = model.generate(pixels, prompts.input_ids, prompts.attention_mask, share_prefill=False, **settings)
    assert shared.tolist() == plain.tolist()
    assert len({tuple(row) for row in shared.tolist()}) > 1, "identical rows would make this comparison weak"


def test_the_prefix_runs_once_per_row(model_and_prompts, monkeypatch) -> None:
    model, prompts = model_and_prompts
    calls: list[tuple[int, int]] = []
    forward = type(model.language_model).forward

    def counted(self, *args, **kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None:
            calls.append(tuple(embeds.shape[:2]))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model.language_model), "forward", counted)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.generate(pixels, prompts.input_ids, prompts.attention_mask, num_beams=5, max_new_tokens=3)
    length = model.config.num_query_tokens + prompts.input_ids.shape[1]
    # The prefix (all but the last position) for the 3 rows, then only the last position for the 15 beams.
    assert calls == [(3, length - 1), (15, 1)]
