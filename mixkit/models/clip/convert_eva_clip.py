"""EVA-CLIP (EVA-02) checkpoints in their published layout -> `EvaClipModel`, by a declarative key map.

Published layout (baaivision/EVA, `EVA-CLIP/rei/eva_clip/model.py` `CustomCLIP`, `eva_vit_model.py`,
`rope.py`, `transformer.py`, commit 322427b; the `EVA02_CLIP_*.pt` files of the `QuanSun/EVA-CLIP` Hub repo):
- `visual.patch_embed.proj` (conv with bias), `visual.cls_token` [1, 1, D], `visual.pos_embed` [1, 1 + P, D];
- `visual.blocks.{i}.norm1|norm2`, `.attn.q_proj|k_proj|v_proj.weight` (no bias modules), `.attn.q_bias`,
  `.attn.v_bias`, `.attn.inner_attn_ln`, `.attn.proj`, `.mlp.w1|w2|ffn_ln|w3`;
- `visual.norm` (the final LayerNorm: `use_mean_pooling` is False for EVA02-CLIP), `visual.head` (with bias);
- the rotary tables `visual.rope.freqs_cos|freqs_sin` are persistent buffers of a module shared by every block,
  so they also appear under `visual.blocks.{i}.attn.rope.`: dropped, after checking they equal ours;
- the text tower under `text.` (open_clip's `TextTransformer`: `mixkit.models.clip.convert_open_clip`), GELU;
- `logit_scale`.
Heads are not stored: EVA-CLIP uses `width // head_width` with `head_width` 64 in every EVA02-CLIP config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mixkit.models.clip.convert_open_clip import DEFAULT_HEAD_WIDTH, TEXT_RULES, OpenClipSpec, text_config_dict
from mixkit.models.clip.eva_config import EvaClipConfig, EvaVisionConfig
from mixkit.models.clip.eva_vit import rotary_angles
from mixkit.models.clip.keymap import ConversionError, Drop, KeyMapReport, Rule, check_keys, convert_state_dict

_BLOCK = r"^visual\.blocks\.(\d+)\."
_LAYER = r"vision_model.layers.\1."

VISION_RULES: tuple[Rule, ...] = (
    Rule(r"^visual\.patch_embed\.proj\.", ("vision_model.embeddings.patch_embedding.",)),
    Rule(r"^visual\.cls_token$", ("vision_model.embeddings.class_embedding",)),
    Rule(r"^visual\.pos_embed$", ("vision_model.embeddings.position_embedding",)),
    Rule(_BLOCK + r"norm1\.", (_LAYER + "layer_norm1.",)),
    Rule(_BLOCK + r"norm2\.", (_LAYER + "layer_norm2.",)),
    Rule(_BLOCK + r"attn\.(q|k|v)_proj\.weight$", (_LAYER + r"self_attn.\2_proj.weight",)),
    Rule(_BLOCK + r"attn\.(q|v)_bias$", (_LAYER + r"self_attn.\2_proj.bias",)),
    Rule(_BLOCK + r"attn\.inner_attn_ln\.", (_LAYER + "self_attn.inner_norm.",)),
    Rule(_BLOCK + r"attn\.proj\.", (_LAYER + "self_attn.out_proj.",)),
    Rule(_BLOCK + r"mlp\.w1\.", (_LAYER + "mlp.gate_proj.",)),
    Rule(_BLOCK + r"mlp\.w2\.", (_LAYER + "mlp.up_proj.",)),
    Rule(_BLOCK + r"mlp\.ffn_ln\.", (_LAYER + "mlp.inner_norm.",)),
    Rule(_BLOCK + r"mlp\.w3\.", (_LAYER + "mlp.down_proj.",)),
    Rule(r"^visual\.norm\.", ("vision_model.post_layernorm.",)),
    Rule(r"^visual\.head\.", ("visual_projection.",)),
)
_ROPE = r"^visual\.(?:blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$"


def rotary_drops(config: EvaVisionConfig) -> tuple[Drop, ...]:
    """The stored rotary tables are dropped only if they equal the ones mixkit computes (same layout)."""
    angles = rotary_angles(config.head_dim, config.grid_size, config.rope_pretrain_grid, config.rope_theta)
    expected = {"cos": angles.cos(), "sin": angles.sin()}

    def check(key: str, tensor: Tensor) -> None:
        table = expected[re.match(_ROPE, key).group(1)]
        if tensor.shape != table.shape or not torch.allclose(tensor.float(), table, atol=1e-4):
            raise ConversionError(f"{key}: the stored rotary table (shape {tuple(tensor.shape)}) differs from the "
                                  f"EVA-02 table for a {config.grid_size}x{config.grid_size} grid, head dim "
                                  f"{config.head_dim}, pretrain grid {config.rope_pretrain_grid}")

    return (Drop(_ROPE, "rotary table, a buffer computed from the config (checked equal)", check),
            Drop(r"^(?:text\.)?attn_mask$", "the causal mask, a buffer that transformers builds itself"))


@dataclass(frozen=True)
class EvaClipSpec:
    """What EVA-CLIP weights do not hold."""

    head_width: int = DEFAULT_HEAD_WIDTH
    rope_pretrain_grid: int = 16  # `pt_hw_seq_len` of every EVA02-CLIP config
    text_quick_gelu: bool = False  # EVA02-CLIP's text towers use nn.GELU


def _require(sd: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in sd:
        raise ConversionError(f"not an EVA-02 CLIP checkpoint: no {key!r}")
    return sd[key]


def _num_blocks(sd: Mapping[str, Tensor]) -> int:
    indices = {int(m.group(1)) for key in sd if (m := re.match(_BLOCK, key))}
    if not indices or indices != set(range(len(indices))):
        raise ConversionError(f"visual.blocks: expected blocks 0..n-1, found {sorted(indices)}")
    return len(indices)


def eva_vision_config(sd: Mapping[str, Tensor], spec: EvaClipSpec) -> EvaVisionConfig:
    patch = _require(sd, "visual.patch_embed.proj.weight")
    width, positions = patch.shape[0], _require(sd, "visual.pos_embed").shape[1]
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions or width % spec.head_width:
        raise ConversionError(f"visual: {positions} positions (1 + a square grid?) and width {width} "
                              f"(a multiple of head_width {spec.head_width}?) do not fit EVA-02")
    return EvaVisionConfig(
        hidden_size=width, intermediate_size=_require(sd, "visual.blocks.0.mlp.w1.weight").shape[0],
        num_hidden_layers=_num_blocks(sd), num_attention_heads=width // spec.head_width,
        image_size=grid * patch.shape[-1], patch_size=patch.shape[-1], qkv_bias="visual.blocks.0.attn.q_bias" in sd,
        rope_pretrain_grid=spec.rope_pretrain_grid,
    )


def eva_clip_config(sd: Mapping[str, Tensor], spec: EvaClipSpec = EvaClipSpec()) -> EvaClipConfig:
    text_spec = OpenClipSpec(quick_gelu=spec.text_quick_gelu, head_width=spec.head_width)
    return EvaClipConfig(vision_config=eva_vision_config(sd, spec), text_config=text_config_dict(sd, text_spec),
                         projection_dim=_require(sd, "visual.head.weight").shape[0])


def convert_eva_clip_state_dict(sd: Mapping[str, Tensor], config: EvaClipConfig) -> KeyMapReport:
    return convert_state_dict(sd, (*VISION_RULES, *TEXT_RULES), rotary_drops(config.vision_config), "EVA-CLIP")


def load_eva_clip_weights(sd: Mapping[str, Tensor], spec: EvaClipSpec = EvaClipSpec()):
    """An `EvaClipModel` holding the EVA-CLIP weights (strict: every key accounted for) and the report."""
    from mixkit.models.clip.eva_clip import EvaClipModel
    from mixkit.models.serialization import parameters_on_meta

    config = eva_clip_config(sd, spec)
    report = convert_eva_clip_state_dict(sd, config)
    with parameters_on_meta():
        model = EvaClipModel(config).eval()
    check_keys(report, model.state_dict().keys())
    model.load_state_dict(report.state_dict, strict=True, assign=True)
    return model, report


__all__ = ["EvaClipSpec", "VISION_RULES", "convert_eva_clip_state_dict", "eva_clip_config", "load_eva_clip_weights"]
