"""LAVIS InstructBLIP `.pth` files (built here in LAVIS's layout) convert into the `transformers` layout strictly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from mixkit.models.blip2.convert_lavis import ConversionError, LANGUAGE_MODEL_PREFIXES, VISION_TOWER_PREFIXES
from mixkit.models.blip2.lavis_files import load_lavis_checkpoint
from mixkit.models.instructblip.convert_lavis import convert_instructblip_state_dict
from mixkit.models.instructblip.modeling import InstructBlipModel
from mixkit.models.instructblip.tiny import tiny_instructblip_config
from mixkit.models.serialization import load_weights_strict
from mixkit.testing import randomize_

# Our key -> LAVIS's key, written from LAVIS's module names (eva_vit.py, Qformer.py, blip2_*_instruct.py).
TO_LAVIS = (
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"visual_encoder.blocks.\1.norm\2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.weight", r"visual_encoder.blocks.\1.attn.qkv.weight"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "ln_vision."),
    (r"^qformer\.embeddings\.layernorm\.", "Qformer.bert.embeddings.LayerNorm."),
    (r"^qformer\.embeddings\.", "Qformer.bert.embeddings."),
    (r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.", r"Qformer.bert.encoder.layer.\1.\2.self."),
    (r"^qformer\.encoder\.layer\.(\d+)\.", r"Qformer.bert.encoder.layer.\1."),
)


def lavis_state_dict(model: InstructBlipModel, language_model: str) -> dict[str, torch.Tensor]:
    """The model's weights as LAVIS names them (EVA's q_bias/v_bias apart, cls_token, pos_embed, position_ids)."""
    prefix = "t5" if language_model == "t5" else "llm"
    lavis: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith("self_attn.qkv.bias"):
            block = re.match(r"vision_model\.encoder\.layers\.(\d+)\.", key).group(1)
            q, _, v = value.chunk(3)
            lavis[f"visual_encoder.blocks.{block}.attn.q_bias"], lavis[f"visual_encoder.blocks.{block}.attn.v_bias"] = q, v
            continue
        new = {"vision_model.embeddings.class_embedding": "visual_encoder.cls_token",
               "vision_model.embeddings.position_embedding": "visual_encoder.pos_embed",
               "query_tokens": "query_tokens"}.get(key)
        for pattern, template in TO_LAVIS:
            if new is None and re.match(pattern, key):
                new = re.sub(pattern, template, key)
        if new is None:
            new = re.sub(r"^language_projection\.", f"{prefix}_proj.", re.sub(r"^language_model\.", f"{prefix}_model.", key))
        lavis[new] = value
    positions = model.config.qformer_config.max_position_embeddings
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(positions)[None]
    return lavis


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_lavis_checkpoint_converts_to_the_same_model(language_model: str, tmp_path: Path) -> None:
    config = tiny_instructblip_config(language_model)
    source = randomize_(InstructBlipModel(config), seed=2, std=0.15)
    lavis = lavis_state_dict(source, language_model)
    path = tmp_path / "instruct_blip.pth"
    torch.save({"model": lavis}, path)  # the runner's layout; read back with weights_only=True
    report = convert_instructblip_state_dict(load_lavis_checkpoint(path), "t5" if language_model == "t5" else "vicuna")
    assert not report.unmapped and set(report.dropped) == {"Qformer.bert.embeddings.position_ids"}
    report.check_against(source.state_dict().keys())
    target = InstructBlipModel(config)
    load_weights_strict(target, report.state_dict)
    pixels = torch.randn(1, 3, 32, 32)
    ids, qformer_ids = torch.tensor([[2, 10, 11]]), torch.tensor([[5, 6, 7]])
    decoder = {"decoder_input_ids": torch.tensor([[0, 4]])} if language_model == "t5" else {}
    with torch.no_grad():
        assert_close(target.eval()(pixels, ids, qformer_input_ids=qformer_ids, **decoder).logits,
                     source.eval()(pixels, ids, qformer_input_ids=qformer_ids, **decoder).logits)


def test_trimmed_checkpoint_names_what_comes_from_elsewhere(tmp_path: Path) -> None:
    """LAVIS's `*_trimmed.pth` hold no ViT blocks and no LLM: those are missing only where declared; a key
    nothing maps is reported, and a Flan-T5 file is not taken for a Vicuna one."""
    model = InstructBlipModel(tiny_instructblip_config("llama"))
    lavis = {key: value for key, value in lavis_state_dict(model, "llama").items()
             if not key.startswith(("visual_encoder.blocks", "visual_encoder.patch", "visual_encoder.cls",
                                    "visual_encoder.pos", "llm_model."))}
    report = convert_instructblip_state_dict(lavis, "vicuna")
    check = report.check_against(model.state_dict().keys(), VISION_TOWER_PREFIXES + LANGUAGE_MODEL_PREFIXES)
    assert check.ok and check.provided_elsewhere
    assert not any(key.startswith(("qformer.", "language_projection.")) for key in check.provided_elsewhere)
    strange = convert_instructblip_state_dict({**lavis, "Qformer.cls.predictions.bias": torch.zeros(3)}, "vicuna")
    assert strange.unmapped == ["Qformer.cls.predictions.bias"]
    with pytest.raises(ConversionError, match="unmapped"):
        strange.check_against(model.state_dict().keys(), VISION_TOWER_PREFIXES + LANGUAGE_MODEL_PREFIXES)
    t5_like = {key.replace("llm_proj.", "t5_proj."): value for key, value in lavis.items()}
    with pytest.raises(ConversionError, match="not a vicuna"):
        convert_instructblip_state_dict(t5_like, "vicuna")
