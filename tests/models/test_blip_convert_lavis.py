"""LAVIS BLIP `.pth` files in their published layout (built here from LAVIS's module names) convert strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mixkit.models.blip.convert_lavis import ConversionError, convert_lavis_blip, convert_lavis_state, read_lavis_file
from mixkit.models.blip.modeling import BlipModel
from mixkit.models.blip.tiny import tiny_blip_config
from mixkit.models.serialization import CheckpointMismatchError
from mixkit.testing import randomize_

# mixkit name -> LAVIS name, written from lavis/models/vit.py (VisionTransformer) at commit 506965b.
VIT_NAMES = [
    ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
    ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
    ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
    ("vision_model.post_layernorm.", "visual_encoder.norm."),
    (".layer_norm1.", ".norm1."), (".layer_norm2.", ".norm2."), (".self_attn.qkv.", ".attn.qkv."),
    (".self_attn.projection.", ".attn.proj."), ("vision_model.encoder.layers.", "visual_encoder.blocks."),
]


def lavis_layout(model: BlipModel, momentum: bool) -> dict[str, torch.Tensor]:
    """What LAVIS's `state_dict()` holds for the same weights: its ViT names, persistent position ids, the
    decoder's tied copies, and (retrieval / pretrain) momentum encoders and queues."""
    state = {}
    for name, value in model.state_dict().items():
        for ours, theirs in VIT_NAMES:
            name = name.replace(ours, theirs)
        state[name] = value.clone()
    for prefix in ("text_encoder", "text_decoder.bert"):
        if f"{prefix}.embeddings.word_embeddings.weight" in state:
            state[f"{prefix}.embeddings.position_ids"] = torch.arange(64)[None]
    if "text_decoder.cls.predictions.bias" in state:
        state["text_decoder.cls.predictions.decoder.weight"] = state["text_decoder.bert.embeddings.word_embeddings.weight"]
        state["text_decoder.cls.predictions.decoder.bias"] = state["text_decoder.cls.predictions.bias"]
    if momentum:
        state["visual_encoder_m.cls_token"] = torch.zeros(1, 1, 32)
        state["text_proj_m.weight"] = torch.zeros(16, 32)
        state.update(image_queue=torch.zeros(16, 8), text_queue=torch.zeros(16, 8), queue_ptr=torch.zeros(1),
                     idx_queue=torch.zeros(1, 8))
    return state


@pytest.mark.parametrize("architecture", ["BlipForQuestionAnswering", "BlipForImageTextRetrieval"])
def test_lavis_layout_converts_to_the_same_outputs(architecture: str, tmp_path: Path) -> None:
    config = tiny_blip_config()
    source = randomize_(BlipModel(config, architecture), seed=7, std=0.15)
    path = tmp_path / "lavis.pth"
    torch.save({"model": lavis_layout(source, momentum=architecture == "BlipForImageTextRetrieval")}, path)
    converted = convert_lavis_blip(read_lavis_file(path), config, architecture)
    pixels, ids = torch.randn(1, 3, 32, 32), torch.tensor([[119, 5, 6, 3]])
    with torch.no_grad():
        expected, got = source.multimodal_hidden(source.encode_image(pixels), ids, torch.ones_like(ids)), \
            converted.multimodal_hidden(converted.encode_image(pixels), ids, torch.ones_like(ids))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert set(converted.state_dict()) == set(source.state_dict())


def test_unknown_and_missing_keys_are_named() -> None:
    state = lavis_layout(BlipModel(tiny_blip_config(), "BlipForConditionalGeneration"), momentum=False)
    with pytest.raises(ConversionError, match="visual_encoder.extra_thing"):
        convert_lavis_state({**state, "visual_encoder.extra_thing": torch.zeros(1)})
    state.pop("visual_encoder.norm.weight")
    with pytest.raises(CheckpointMismatchError, match="vision_model.post_layernorm.weight"):
        convert_lavis_blip(state, tiny_blip_config(), "BlipForConditionalGeneration")
