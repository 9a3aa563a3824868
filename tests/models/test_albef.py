"""ALBEF's model: LAVIS `.pth` files in their published layouts (built here from a random mixkit model, keys as
LAVIS 506965b names them: `lavis/models/vit.py`, `med.py`, `albef_models/*.py`) convert back to the same outputs
with a strict load; structure (text layers then fusion layers); the debug flavour's checks."""

from __future__ import annotations

import re

import pytest
import torch

from mixkit.models.albef.convert_lavis import convert_lavis_albef, convert_lavis_albef_state, read_lavis_file
from mixkit.models.albef.modeling import AlbefModel
from mixkit.models.albef.tiny import tiny_albef_config
from mixkit.models.blip.convert_lavis import ConversionError
from mixkit.models.serialization import CheckpointMismatchError
from mixkit.testing import randomize_

# mixkit name -> LAVIS name, written out for the ViT (LAVIS `VisionTransformer`); the BERT keeps its names.
VIT_TO_LAVIS = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"visual_encoder.blocks.\1.attn.qkv."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
]
ARCHITECTURES = ("AlbefForRetrieval", "AlbefForPreTraining", "AlbefForQuestionAnswering")


def tiny(architecture: str, seed: int = 0) -> AlbefModel:
    torch.manual_seed(seed)
    return randomize_(AlbefModel(tiny_albef_config(), architecture), seed, std=0.15)


def lavis_name(name: str, architecture: str) -> str:
    for pattern, replacement in VIT_TO_LAVIS:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    if architecture == "AlbefForPreTraining":  # BertForMaskedLM: `bert.` inside text_encoder, MLM head under `cls.`
        name = re.sub(r"^text_encoder\.", "text_encoder.bert.", name)
        name = re.sub(r"^mlm_head\.", "text_encoder.cls.predictions.", name)
    return name


def lavis_file(model: AlbefModel, queue_size: int = 8) -> dict[str, torch.Tensor]:
    """What LAVIS's `model.state_dict()` holds for this architecture: the weights under LAVIS's names, the tied
    output copies, position_ids buffers, momentum copies and queues."""
    arch, state = model.architecture, {}
    for name, value in model.state_dict().items():
        state[lavis_name(name, arch)] = value.clone()
    text_prefix = "text_encoder.bert." if arch == "AlbefForPreTraining" else "text_encoder."
    state[text_prefix + "embeddings.position_ids"] = torch.arange(64)[None]
    if arch == "AlbefForPreTraining":
        state["text_encoder.cls.predictions.decoder.weight"] = state[text_prefix + "embeddings.word_embeddings.weight"]
        state["text_encoder.cls.predictions.decoder.bias"] = state["text_encoder.cls.predictions.bias"]
    if arch == "AlbefForQuestionAnswering":
        state["text_decoder.bert.embeddings.position_ids"] = torch.arange(64)[None]
        state["text_decoder.cls.predictions.decoder.weight"] = state["text_decoder.bert.embeddings.word_embeddings.weight"]
        state["text_decoder.cls.predictions.decoder.bias"] = state["text_decoder.cls.predictions.bias"]
    momentum_parts = ("visual_encoder", "text_encoder", "text_decoder") if arch == "AlbefForQuestionAnswering" \
        else ("visual_encoder", "text_encoder", "vision_proj", "text_proj")
    for key in list(state):
        part, _, rest = key.partition(".")
        if part in momentum_parts:
            state[f"{part}_m.{rest}"] = state[key].clone()
    if arch != "AlbefForQuestionAnswering":
        state["image_queue"], state["text_queue"] = torch.randn(16, queue_size), torch.randn(16, queue_size)
        state["queue_ptr"] = torch.zeros(1, dtype=torch.long)
        if arch == "AlbefForRetrieval":
            state["idx_queue"] = torch.full((1, queue_size), -100)
    return state


def inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return torch.randn(2, 3, 32, 32, generator=generator), ids, mask


def outputs(model: AlbefModel) -> list[torch.Tensor]:
    pixels, ids, mask = inputs()
    with torch.no_grad():
        embeds = model.encode_image(pixels)
        if model.architecture == "AlbefForQuestionAnswering":
            states = model.multimodal_hidden(embeds, ids, mask)
            return [states, model.decoder_logits(states, ids, mask, mask)]
        result = [model.image_features(embeds), model.text_features(ids, mask), model.itm_logits(embeds, ids, mask)]
        if model.architecture == "AlbefForPreTraining":
            result.append(model.mlm_logits(embeds, ids, mask))
        return result


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_lavis_files_convert_to_the_same_outputs(architecture: str, tmp_path) -> None:
    model = tiny(architecture)
    path = tmp_path / "albef.pth"
    torch.save({"model": lavis_file(model), "epoch": 3}, path)
    converted = convert_lavis_albef(read_lavis_file(path), tiny_albef_config(), architecture)
    for expected, actual in zip(outputs(model), outputs(converted), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    _, dropped = convert_lavis_albef_state(lavis_file(model), architecture)
    assert any(key.startswith("visual_encoder_m.") for key in dropped)
    assert any(key.endswith("position_ids") for key in dropped)


def test_a_pretraining_file_converts_to_retrieval_dropping_the_mlm_head() -> None:
    model = tiny("AlbefForPreTraining")
    converted = convert_lavis_albef(lavis_file(model), tiny_albef_config(), "AlbefForRetrieval")
    torch.testing.assert_close(outputs(converted), outputs(model)[:3], rtol=0, atol=0)


def test_conversion_is_strict_where_lavis_is_silent() -> None:
    config = tiny_albef_config()
    state = lavis_file(tiny("AlbefForRetrieval"))
    with pytest.raises(ConversionError, match="visual_encoder.head.weight"):
        convert_lavis_albef({**state, "visual_encoder.head.weight": torch.zeros(2)}, config, "AlbefForRetrieval")
    missing = {key: value for key, value in state.items() if key != "itm_head.weight"}
    with pytest.raises(CheckpointMismatchError, match="itm_head.weight"):
        convert_lavis_albef(missing, config, "AlbefForRetrieval")
    # LAVIS's load_from_pretrained deletes misshapen keys (e.g. a 224 px position table in a 384 px model).
    wrong = {**state, "visual_encoder.pos_embed": torch.zeros(1, 5, 32)}
    with pytest.raises(ConversionError, match="visual_encoder|position_embedding"):
        convert_lavis_albef(wrong, config, "AlbefForRetrieval")
    pretrain = lavis_file(tiny("AlbefForPreTraining"))
    pretrain["text_encoder.cls.predictions.decoder.bias"] = pretrain["text_encoder.cls.predictions.bias"] + 1
    with pytest.raises(CheckpointMismatchError, match="mlm_head.decoder.bias"):
        convert_lavis_albef(pretrain, config, "AlbefForPreTraining")


def test_text_layers_then_fusion_layers() -> None:
    model = tiny("AlbefForRetrieval").eval()
    fusion = model.config.fusion_layer
    for index, layer in enumerate(model.text_encoder.encoder.layer):
        assert hasattr(layer, "crossattention") == (index >= fusion)
    pixels, ids, mask = inputs()
    with torch.no_grad():
        embeds = model.encode_image(pixels)
        text = model.text_states(ids, mask)
        # LAVIS's "multimodal" mode (every layer) equals "text" then "fusion"; ITC reads the text layers alone.
        torch.testing.assert_close(model.multimodal_hidden(embeds, ids, mask)[:, 0], model.fused_cls(text, mask, embeds))
        torch.testing.assert_close(model.text_features(ids, mask), model.project_text(text))
    with pytest.raises(ValueError, match="fusion_layer"):
        tiny_albef_config(layers=4, fusion_layer=4)
    with pytest.raises(ValueError, match="unknown ALBEF architecture"):
        AlbefModel(tiny_albef_config(), "BlipForPreTraining")


def test_debug_flavour_gradients_round_trip_and_checkpointing(tmp_path) -> None:
    model = tiny("AlbefForPreTraining").train()
    model.lock_image_tower()
    pixels, ids, mask = inputs()
    embeds = model.encode_image(pixels)
    loss = (model.similarity(model.image_features(embeds), model.text_features(ids, mask)).logsumexp(1).mean()
            + model.itm_logits(embeds, ids, mask).logsumexp(1).mean() + model.mlm_logits(embeds, ids, mask).mean())
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("vision_model."):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    model.eval()
    expected = outputs(model)
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(outputs(AlbefModel.from_pretrained(tmp_path)), expected, rtol=0, atol=0)
    model.set_gradient_checkpointing(True)
    model.train()
    pixels, ids, mask = inputs()
    checkpointed = model.mlm_logits(model.encode_image(pixels), ids, mask)
    model.set_gradient_checkpointing(False)
    torch.testing.assert_close(checkpointed, model.mlm_logits(model.encode_image(pixels), ids, mask))
    assert model.text_encoder.gradient_checkpointing is False
