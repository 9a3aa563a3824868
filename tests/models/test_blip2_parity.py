"""Parity with `transformers`' BLIP-2 classes on the same random weights (tiny configs, fp32)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close
from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval

from mixkit.testing import randomize_ as randomize_weights
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.models.serialization import CheckpointMismatchError

IMAGE_TOKEN = 99


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.15) -> torch.nn.Module:
    return randomize_weights(model, seed, std)


def hf_pair(language_model: str) -> tuple[Blip2ForConditionalGeneration, Blip2Model]:
    config = tiny_blip2_config(language_model)
    config.image_token_index = IMAGE_TOKEN
    reference = randomize_(Blip2ForConditionalGeneration(config))
    ours = Blip2Model(config).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def with_image_tokens(prompt_ids: torch.Tensor, num_queries: int) -> torch.Tensor:
    """`transformers` 5.x expects the image placeholders in the text; mixkit does not."""
    return torch.cat([torch.full((prompt_ids.shape[0], num_queries), IMAGE_TOKEN), prompt_ids], dim=1)


PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
PROMPTS = torch.tensor([[2, 10, 11, 12], [2, 13, 14, 15]])


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_logits_match_transformers(language_model: str) -> None:
    reference, ours = hf_pair(language_model)
    hf_ids = with_image_tokens(PROMPTS, ours.config.num_query_tokens)
    decoder = {"decoder_input_ids": torch.tensor([[0, 5, 6], [0, 7, 8]])} if language_model == "t5" else {}
    with torch.no_grad():
        expected = reference(pixel_values=PIXELS, input_ids=hf_ids, **decoder).logits
        actual = ours(PIXELS, PROMPTS, **decoder).logits
    assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("language_model", ["opt", "t5"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generated_ids_match_transformers(language_model: str, num_beams: int) -> None:
    reference, ours = hf_pair(language_model)
    hf_ids = with_image_tokens(PROMPTS, ours.config.num_query_tokens)
    settings = {"max_new_tokens": 7, "min_new_tokens": 3, "num_beams": num_beams}
    expected = reference.generate(pixel_values=PIXELS, input_ids=hf_ids, **settings)
    # Decoder-only output repeats the prompt; encoder-decoder output starts with the decoder start token.
    expected = expected[:, hf_ids.shape[1] :] if language_model == "opt" else expected[:, 1:]
    actual = ours.generate(PIXELS, PROMPTS, **settings)
    assert actual.tolist() == expected.tolist()
    assert len(set(actual.flatten().tolist())) > 1, "degenerate weights would make this comparison weak"


def test_retrieval_heads_match_transformers() -> None:
    config = tiny_blip2_config(stage1=True)
    reference = randomize_(Blip2ForImageTextRetrieval(config))
    ours = Blip2Stage1Model(config).eval()
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected and set(missing) == {k for k in ours.state_dict() if k == "temp" or k.startswith("lm_head.")}
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        itm_expected = reference(pixel_values=PIXELS, input_ids=ids, attention_mask=mask, use_image_text_matching_head=True)
        itc_expected = reference(pixel_values=PIXELS, input_ids=ids, attention_mask=mask)
        features = ours.encode_image_features(PIXELS)
        itm_actual = ours.itm_logits(features.image_embeds, ids, mask)
        itc_actual = ours.best_query_cosine(features.image_feats, ours.text_features(ids, mask))
    assert_close(itm_actual, itm_expected.logits_per_image, rtol=1e-5, atol=1e-6)
    assert_close(itc_actual, itc_expected.logits_per_image, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_checkpoint_folders_load_both_ways(language_model: str, tmp_path) -> None:
    reference, _ = hf_pair(language_model)
    reference.save_pretrained(tmp_path / "hf")
    ours = Blip2Model.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "mixkit")
    back = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "mixkit").eval()
    hf_ids = with_image_tokens(PROMPTS, ours.config.num_query_tokens)
    decoder = {"decoder_input_ids": torch.tensor([[0, 5], [0, 7]])} if language_model == "t5" else {}
    with torch.no_grad():
        expected = reference(pixel_values=PIXELS, input_ids=hf_ids, **decoder).logits
        assert_close(ours(PIXELS, PROMPTS, **decoder).logits, expected, rtol=1e-5, atol=1e-5)
        assert_close(back(pixel_values=PIXELS, input_ids=hf_ids, **decoder).logits, expected, rtol=1e-5, atol=1e-5)


def test_flan_t5_untied_head_is_kept_apart(tmp_path) -> None:
    """Flan-T5 checkpoints hold `shared` and `lm_head` with different values; tying them would be garbage."""
    reference, _ = hf_pair("t5")
    reference.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    shared = weights["language_model.shared.weight"]
    weights["language_model.lm_head.weight"] = torch.randn_like(shared)
    save_file(weights, str(tmp_path / "model.safetensors"), {"format": "pt"})
    ours = Blip2Model.from_pretrained(tmp_path)
    head = ours.language_model.get_output_embeddings().weight
    assert_close(head, weights["language_model.lm_head.weight"])
    assert_close(ours.language_model.get_input_embeddings().weight, shared)


def test_strict_load_names_missing_and_unexpected_keys(tmp_path) -> None:
    reference, _ = hf_pair("opt")
    reference.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["qformer.layernorm.weight"]
    weights["qformer.extra.weight"] = torch.zeros(1)
    save_file(weights, str(tmp_path / "model.safetensors"), {"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match=r"missing 1 \[qformer.layernorm.weight\].*qformer.extra.weight"):
        Blip2Model.from_pretrained(tmp_path)


def test_half_precision_policy_keeps_qformer_fp32() -> None:
    """The reference dtype policy: frozen ViT trunk and LLM in half precision, Q-Former path in fp32."""
    _, ours = hf_pair("opt")
    with torch.no_grad():
        full = ours(PIXELS, PROMPTS).logits
        ours.set_inference_dtypes(torch.bfloat16, torch.bfloat16)
        half = ours(PIXELS, PROMPTS).logits
    assert ours.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert ours.language_model.get_input_embeddings().weight.dtype == torch.bfloat16
    for module in (ours.qformer, ours.language_projection, ours.vision_model.post_layernorm):
        assert all(p.dtype == torch.float32 for p in module.parameters())
    assert ours.query_tokens.dtype == torch.float32
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    # bf16 keeps ~3 significant digits: the ranking of the top token survives for most positions
    agreement = (half.float().argmax(-1) == full.argmax(-1)).float().mean()
    assert agreement > 0.8


def test_position_interpolation_for_larger_images_matches_transformers() -> None:
    """224 -> 364 px fine-tuning: the patch position grid is resized bicubically, the class position kept."""
    reference, ours = hf_pair("opt")
    bigger = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(3))  # 7x7 patches vs 4x4 trained
    with torch.no_grad():
        expected = reference.vision_model(bigger, interpolate_pos_encoding=True).last_hidden_state
        actual = ours.encode_image(bigger)
    assert actual.shape == (1, 50, 32)
    assert_close(actual, expected, rtol=1e-5, atol=1e-5)
