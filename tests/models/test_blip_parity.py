"""BLIP against `transformers` on the same random weights: the three heads' logits within 1e-5 and identical
generated ids (greedy and beams), loaded from folders `transformers` wrote; plus the debug-flavour checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from mixkit.models.blip.modeling import BlipModel, drop_tied_duplicates
from mixkit.models.blip.tiny import tiny_blip_config
from mixkit.models.serialization import CheckpointMismatchError
from mixkit.testing import randomize_

BOS, SEP, ENC = 118, 3, 119
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
IDS = torch.tensor([[101, 5, 6, 7, 8, SEP], [101, 9, 10, SEP, 0, 0]])
MASK = (IDS != 0).long()


def _pair(tmp_path: Path, architecture: str, seed: int = 0) -> tuple[torch.nn.Module, BlipModel]:
    """(transformers model, mixkit model loaded from the folder transformers saved)."""
    torch.manual_seed(seed)
    reference = randomize_(getattr(transformers, architecture)(tiny_blip_config()), seed, 0.15)
    reference.save_pretrained(tmp_path)
    return reference, BlipModel.from_pretrained(tmp_path)


@torch.no_grad()
def test_caption_logits_and_generation_match_transformers(tmp_path: Path) -> None:
    reference, ours = _pair(tmp_path, "BlipForConditionalGeneration")
    decoder_ids = IDS.clone()
    decoder_ids[:, 0] = BOS
    expected = reference(pixel_values=PIXELS, input_ids=decoder_ids, attention_mask=MASK).logits
    image_embeds = ours.encode_image(PIXELS)
    torch.testing.assert_close(ours.decoder_logits(image_embeds, decoder_ids, MASK), expected, atol=1e-5, rtol=0)
    for prompt in ([BOS], [BOS, 5, 6]):  # no prompt; a prompt (transformers drops the final [SEP] it expects)
        for options in ({}, {"num_beams": 3, "min_new_tokens": 2}):
            reference_ids = reference.generate(pixel_values=PIXELS, input_ids=torch.tensor([prompt + [SEP]] * 2),
                                               max_new_tokens=8, **options)
            ours_ids = ours.generate(image_embeds, torch.tensor([prompt] * 2), max_new_tokens=8, **options)
            assert torch.equal(ours_ids, reference_ids[:, len(prompt):]), (prompt, options)


@torch.no_grad()
def test_vqa_states_logits_and_answers_match_transformers(tmp_path: Path) -> None:
    reference, ours = _pair(tmp_path, "BlipForQuestionAnswering", seed=1)
    question = IDS[:1].clone()
    question[:, 0] = ENC  # LAVIS's encoding; transformers encodes what it is given
    image_embeds = ours.encode_image(PIXELS[:1])
    states = ours.multimodal_hidden(image_embeds, question, MASK[:1])
    expected_states = reference.text_encoder(input_ids=question, attention_mask=MASK[:1],
                                             encoder_hidden_states=reference.vision_model(PIXELS[:1])[0])[0]
    torch.testing.assert_close(states, expected_states, atol=1e-5, rtol=0)
    answer = torch.tensor([[BOS, 11, 12, SEP]])
    expected = reference.text_decoder(input_ids=answer, encoder_hidden_states=expected_states).logits
    torch.testing.assert_close(ours.decoder_logits(states, answer, torch.ones_like(answer)), expected, atol=1e-5,
                               rtol=0)
    for options in ({}, {"num_beams": 3}):
        reference_ids = reference.generate(input_ids=question, pixel_values=PIXELS[:1], attention_mask=MASK[:1],
                                           max_new_tokens=6, **options)
        ours_ids = ours.generate(states, torch.tensor([[BOS]]), max_new_tokens=6, **options)
        assert torch.equal(ours_ids, reference_ids[:, 1:]), options


@torch.no_grad()
def test_retrieval_itm_and_itc_match_transformers(tmp_path: Path) -> None:
    reference, ours = _pair(tmp_path, "BlipForImageTextRetrieval", seed=2)
    assert not ours.temp_from_checkpoint and ours.temp.item() == pytest.approx(0.07)  # transformers stores none
    itm_ids = IDS.clone()
    itm_ids[:, 0] = ENC
    expected_itm = reference(input_ids=itm_ids, pixel_values=PIXELS, attention_mask=MASK).itm_score
    image_embeds = ours.encode_image(PIXELS)
    torch.testing.assert_close(ours.itm_logits(image_embeds, itm_ids, MASK), expected_itm, atol=1e-5, rtol=0)
    expected_cosine = reference(input_ids=IDS, pixel_values=PIXELS, attention_mask=MASK, use_itm_head=False).itm_score
    cosine = ours.image_features(image_embeds) @ ours.text_features(IDS, MASK).t()
    torch.testing.assert_close(cosine, expected_cosine, atol=1e-5, rtol=0)


def test_debug_flavour_gradients_no_nan_and_round_trip(tmp_path: Path) -> None:
    model = randomize_(BlipModel(tiny_blip_config(), "BlipForPreTraining"), seed=3, std=0.15).train()
    model.lock_image_tower()
    image_embeds = model.encode_image(PIXELS)
    losses = [model.similarity(model.image_features(image_embeds), model.text_features(IDS, MASK)).logsumexp(1),
              model.itm_logits(image_embeds, IDS, MASK), model.decoder_logits(image_embeds, IDS, MASK)]
    assert all(torch.isfinite(value).all() for value in losses)
    sum(value.float().mean() for value in losses).backward()
    for name, parameter in model.named_parameters():
        if name.startswith("vision_model."):
            assert parameter.grad is None, name
        elif not name.startswith("text_encoder.embeddings.word_embeddings"):  # rows of unused ids stay zero
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.eval().save_pretrained(tmp_path)
    loaded = BlipModel.from_pretrained(tmp_path)
    assert loaded.temp_from_checkpoint
    with torch.no_grad():
        torch.testing.assert_close(loaded.itm_logits(loaded.encode_image(PIXELS), IDS, MASK),
                                   model.itm_logits(model.encode_image(PIXELS), IDS, MASK), atol=0, rtol=0)


def test_gradient_checkpointing_leaves_outputs_unchanged() -> None:
    model = randomize_(BlipModel(tiny_blip_config(), "BlipForQuestionAnswering"), seed=4, std=0.15).train()
    expected = model.decoder_logits(model.multimodal_hidden(model.encode_image(PIXELS), IDS, MASK), IDS, MASK)
    model.set_gradient_checkpointing(True)
    actual = model.decoder_logits(model.multimodal_hidden(model.encode_image(PIXELS), IDS, MASK), IDS, MASK)
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)


def test_missing_heads_and_mismatched_ties_fail_loudly() -> None:
    caption = BlipModel(tiny_blip_config(), "BlipForConditionalGeneration")
    with pytest.raises(ValueError, match="no contrastive head, needed for ITM"):
        caption.itm_logits(torch.zeros(1, 5, 32), IDS[:1], MASK[:1])
    with pytest.raises(ValueError, match="unknown BLIP architecture"):
        BlipModel(tiny_blip_config(), "BlipForEverything")
    state = {"text_decoder.bert.embeddings.word_embeddings.weight": torch.zeros(2, 2),
             "text_decoder.cls.predictions.decoder.weight": torch.ones(2, 2)}
    with pytest.raises(CheckpointMismatchError, match="differs"):
        drop_tied_duplicates(state)
    state["text_decoder.cls.predictions.decoder.weight"] = torch.zeros(2, 2)
    assert list(drop_tied_duplicates(state)) == ["text_decoder.bert.embeddings.word_embeddings.weight"]
