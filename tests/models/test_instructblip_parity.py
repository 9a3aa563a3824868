"""Parity with `transformers`' `InstructBlipForConditionalGeneration` on the same random weights (tiny, fp32), for
a decoder-only LLM (OPT, Llama/Vicuna) and an encoder-decoder one (Flan-T5); plus the family checks of the debug
flavour (no NaN, gradients only where trainable, save/load round trip)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from transformers import InstructBlipForConditionalGeneration

from mixkit.models.instructblip.modeling import InstructBlipModel
from mixkit.models.instructblip.tiny import tiny_instructblip_config
from mixkit.testing import randomize_

IMAGE_TOKEN = 99
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
PROMPTS = torch.tensor([[2, 10, 11, 12], [2, 13, 14, 15]])
# The instruction for the Q-Former, the second row padded: its pads must not change the queries.
QFORMER_IDS = torch.tensor([[101, 7, 8, 9, 102], [101, 30, 31, 0, 0]])
QFORMER_MASK = (QFORMER_IDS != 0).long()


def hf_pair(language_model: str, directory: Path) -> tuple[InstructBlipForConditionalGeneration, InstructBlipModel]:
    """The reference with random weights, saved by `transformers` and loaded by mixkit (strictly)."""
    config = tiny_instructblip_config(language_model, image_token_index=IMAGE_TOKEN)
    reference = randomize_(InstructBlipForConditionalGeneration(config), seed=0, std=0.15)
    reference.save_pretrained(directory)
    return reference, InstructBlipModel.from_pretrained(directory)


def with_image_tokens(prompt_ids: torch.Tensor, num_queries: int) -> torch.Tensor:
    """`transformers` expects the image placeholders in the text (in front, as its processor puts them)."""
    return torch.cat([torch.full((prompt_ids.shape[0], num_queries), IMAGE_TOKEN), prompt_ids], dim=1)


def qformer_inputs() -> dict[str, torch.Tensor]:
    return {"qformer_input_ids": QFORMER_IDS, "qformer_attention_mask": QFORMER_MASK}


@pytest.mark.parametrize("language_model", ["opt", "llama", "t5"])
def test_logits_match_transformers(language_model: str, tmp_path: Path) -> None:
    reference, ours = hf_pair(language_model, tmp_path)
    hf_ids = with_image_tokens(PROMPTS, ours.config.num_query_tokens)
    decoder = {"decoder_input_ids": torch.tensor([[0, 5, 6], [0, 7, 8]])} if language_model == "t5" else {}
    with torch.no_grad():
        expected = reference(pixel_values=PIXELS, input_ids=hf_ids, **qformer_inputs(), **decoder).logits
        actual = ours(PIXELS, PROMPTS, **qformer_inputs(), **decoder).logits
    assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("language_model", ["opt", "llama", "t5"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generated_ids_match_transformers(language_model: str, num_beams: int, tmp_path: Path) -> None:
    reference, ours = hf_pair(language_model, tmp_path)
    hf_ids = with_image_tokens(PROMPTS, ours.config.num_query_tokens)
    # A repetition penalty is compared for T5 only: for a decoder-only LLM `transformers` also penalises the prompt's
    # tokens (its generate gets the ids), LAVIS and mixkit only the new ones (generate gets embeddings only).
    penalty = 1.5 if language_model == "t5" else 1.0
    settings = {"max_new_tokens": 7, "min_new_tokens": 3, "num_beams": num_beams, "repetition_penalty": penalty}
    expected = reference.generate(pixel_values=PIXELS, input_ids=hf_ids, **qformer_inputs(), **settings)
    # Decoder-only output repeats the prompt; encoder-decoder output starts with the decoder start token.
    expected = expected[:, 1:] if language_model == "t5" else expected[:, hf_ids.shape[1]:]
    actual = ours.generate(PIXELS, PROMPTS, **qformer_inputs(), **settings)
    assert actual.tolist() == expected.tolist()
    assert len(set(actual.flatten().tolist())) > 1, "degenerate weights would make this comparison weak"


@pytest.mark.parametrize("language_model", ["opt", "llama"])
def test_left_padded_prompts_match_transformers(language_model: str, tmp_path: Path) -> None:
    """Prompts of different lengths, left-padded as generation needs: `transformers` sees [image][pad][prompt]
    (its processor pads the text, then puts the image tokens in front), mixkit [pad][queries][prompt]."""
    reference, ours = hf_pair(language_model, tmp_path)
    pad = ours.config.text_config.pad_token_id
    prompts = torch.tensor([[pad, pad, 2, 10], [2, 13, 14, 15]])
    mask = (prompts != pad).long()
    num_queries = ours.config.num_query_tokens
    hf_ids = with_image_tokens(prompts, num_queries)
    hf_mask = torch.cat([torch.ones(2, num_queries, dtype=torch.long), mask], dim=1)
    settings = {"max_new_tokens": 6, "min_new_tokens": 6, "num_beams": 2}
    expected = reference.generate(pixel_values=PIXELS, input_ids=hf_ids, attention_mask=hf_mask, **qformer_inputs(),
                                  **settings)[:, hf_ids.shape[1]:]
    actual = ours.generate(PIXELS, prompts, mask, **qformer_inputs(), **settings)
    assert actual.tolist() == expected.tolist()


def test_instruction_changes_the_queries(tmp_path: Path) -> None:
    """The instruction-aware Q-Former: another instruction gives other query outputs; pads change nothing."""
    _, ours = hf_pair("opt", tmp_path)
    with torch.no_grad():
        embeds = ours.encode_image(PIXELS[:1])
        first = ours.query_features(embeds, QFORMER_IDS[:1])
        other = ours.query_features(embeds, QFORMER_IDS[1:, :3])
        padded = ours.query_features(embeds, QFORMER_IDS[1:], QFORMER_MASK[1:])
    assert not torch.allclose(first, other)
    assert_close(padded, other, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="qformer_input_ids"):
        ours.query_features(embeds)


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_debug_flavour_family_checks(language_model: str, tmp_path: Path) -> None:
    """No NaN; with ViT blocks and LLM locked, gradients reach exactly the Q-Former, queries, ln_vision and the
    projection; save/load keeps the outputs."""
    torch.manual_seed(0)
    model = InstructBlipModel(tiny_instructblip_config(language_model))
    model.lock_frozen_parts(keep_language_dropout=False)
    model.train()
    decoder = {"decoder_input_ids": torch.tensor([[0, 5, 6], [0, 7, 8]])} if language_model == "t5" else {}
    logits = model(PIXELS, PROMPTS, **qformer_inputs(), **decoder).logits
    assert torch.isfinite(logits).all()
    logits.float().pow(2).mean().backward()
    trainable = ("qformer.", "query_tokens", "language_projection.", "vision_model.post_layernorm.")
    for name, parameter in model.named_parameters():
        if name.startswith(trainable):
            assert parameter.requires_grad and parameter.grad is not None, name
        else:
            assert not parameter.requires_grad and parameter.grad is None, name
    # Position embeddings beyond the instruction and pad rows get no gradient; everything else trainable does.
    assert model.qformer.embeddings.word_embeddings.weight.grad[QFORMER_IDS[0]].abs().sum() > 0
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = InstructBlipModel.from_pretrained(tmp_path)
    with torch.no_grad():
        assert_close(loaded(PIXELS, PROMPTS, **qformer_inputs(), **decoder).logits,
                     model(PIXELS, PROMPTS, **qformer_inputs(), **decoder).logits)
    reference = InstructBlipForConditionalGeneration.from_pretrained(tmp_path)  # readable by transformers
    assert reference.config.architectures == ["InstructBlipForConditionalGeneration"]
