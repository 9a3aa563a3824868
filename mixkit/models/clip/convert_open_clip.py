"""open_clip ViT checkpoints -> `transformers` `CLIPModel` (config and state dict), without importing open_clip.

open_clip layout facts (mlfoundations/open_clip, `src/open_clip/model.py` and `transformer.py`, read at release
3.3.0, the `open-clip-torch` wheel):
- `VisionTransformer`: `conv1` (no bias), `class_embedding` [width], `positional_embedding` [1 + grid^2, width],
  `ln_pre`, `transformer.resblocks.{i}`, `ln_post`, `proj` [width, embed] applied as `x @ proj` to the class
  token (`pool_type="tok"`); LayerNorm eps 1e-5.
- `ResidualAttentionBlock`: `ln_1`, `attn` = `nn.MultiheadAttention` (`in_proj_weight` [3W, W] = q, k, v
  stacked, `in_proj_bias`, `out_proj`), `ln_2`, `mlp.c_fc`, `mlp.c_proj`; pre-norm.
- `TextTransformer`: `token_embedding`, `positional_embedding` [context, width], the same blocks under a causal
  mask, `ln_final`, `text_projection` [width, embed] applied as `x @ text_projection` at the EOT token (the
  highest id of each sequence, `text.argmax(-1)`); `attn_mask` is a non-persistent buffer.
- `CLIP` keeps the text tower at the top level; `CustomTextCLIP` (and EVA-CLIP's `CustomCLIP`) under `text.`.
- Heads are not stored: open_clip uses `width // 64` (its `head_width` default; the text configs of the published
  ViT models say the same, e.g. ViT-L-14 text width 768, heads 12).
- Activation: OpenAI-trained weights use QuickGELU (`x * sigmoid(1.702 x)`, the `-quickgelu` model names and
  `openai` pretrained tags); LAION-trained ViT-B/L/H use `nn.GELU`. Nothing in the weights says which: the caller
  chooses (`quick_gelu`).
`transformers`' `CLIPTextModel` pools at the first `eos_token_id`; CLIP's EOT (`<|endoftext|>`) is the last id
of the vocabulary, so setting `eos_token_id = vocab_size - 1` pools where open_clip's argmax does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from mixkit.models.serialization import parameters_on_meta
from mixkit.models.clip.keymap import ConversionError, Drop, KeyMapReport, Rule, check_keys, convert_state_dict

DEFAULT_HEAD_WIDTH = 64  # open_clip CLIPVisionCfg.head_width; text heads of the published configs = width // 64
_BLOCK = r"transformer\.resblocks\.(\d+)\."


def block_rules(source: str, target: str) -> tuple[Rule, ...]:
    """One open_clip `ResidualAttentionBlock` (regex prefix `source` ending in the block index group) onto a
    `transformers` `CLIPEncoderLayer` (`target`, with `\\1` for the index)."""
    return (
        Rule(source + r"ln_1\.", (target + "layer_norm1.",)),
        Rule(source + r"ln_2\.", (target + "layer_norm2.",)),
        Rule(source + r"attn\.in_proj_(weight|bias)$",
             tuple(f"{target}self_attn.{name}_proj.\\2" for name in ("q", "k", "v")), "chunk"),
        Rule(source + r"attn\.out_proj\.", (target + "self_attn.out_proj.",)),
        Rule(source + r"mlp\.c_fc\.", (target + "mlp.fc1.",)),
        Rule(source + r"mlp\.c_proj\.", (target + "mlp.fc2.",)),
    )


_TEXT = r"^(?:text\.)?"  # CLIP keeps the text tower at the top level, CustomTextCLIP under "text."

TEXT_RULES: tuple[Rule, ...] = (
    Rule(_TEXT + r"token_embedding\.weight$", ("text_model.embeddings.token_embedding.weight",)),
    Rule(_TEXT + r"positional_embedding$", ("text_model.embeddings.position_embedding.weight",)),
    *block_rules(_TEXT + _BLOCK, r"text_model.encoder.layers.\1."),
    Rule(_TEXT + r"ln_final\.", ("text_model.final_layer_norm.",)),
    Rule(_TEXT + r"text_projection$", ("text_projection.weight",), "transpose"),
    Rule(r"^logit_scale$", ("logit_scale",)),
)

VISION_RULES: tuple[Rule, ...] = (
    Rule(r"^visual\.conv1\.weight$", ("vision_model.embeddings.patch_embedding.weight",)),
    Rule(r"^visual\.class_embedding$", ("vision_model.embeddings.class_embedding",)),
    Rule(r"^visual\.positional_embedding$", ("vision_model.embeddings.position_embedding.weight",)),
    Rule(r"^visual\.ln_pre\.", ("vision_model.pre_layrnorm.",)),  # sic: transformers' spelling
    *block_rules(r"^visual\." + _BLOCK, r"vision_model.encoder.layers.\1."),
    Rule(r"^visual\.ln_post\.", ("vision_model.post_layernorm.",)),
    Rule(r"^visual\.proj$", ("visual_projection.weight",), "transpose"),
)

TEXT_DROPS: tuple[Drop, ...] = (
    Drop(r"^(?:text\.)?attn_mask$", "the causal mask, a buffer that transformers builds itself"),
    Drop(r"^(input_resolution|context_length|vocab_size)$",
         "sizes stored beside OpenAI's JIT weights; the config is inferred from the tensors"),
)


@dataclass(frozen=True)
class OpenClipSpec:
    """What the weights cannot say: the activation, the head width, and CLIP's special token ids."""

    quick_gelu: bool = False
    head_width: int = DEFAULT_HEAD_WIDTH
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.head_width < 1:
            raise ValueError(f"head_width must be >= 1, got {self.head_width}")

    @property
    def hidden_act(self) -> str:
        return "quick_gelu" if self.quick_gelu else "gelu"


def _count_blocks(sd: Mapping[str, Tensor], prefix: str) -> int:
    indices = {int(m.group(1)) for key in sd if (m := re.match(re.escape(prefix) + _BLOCK, key))}
    if indices != set(range(len(indices))) or not indices:
        raise ConversionError(f"{prefix}transformer.resblocks: expected blocks 0..n-1, found {sorted(indices)}")
    return len(indices)


def _heads(width: int, spec: OpenClipSpec, what: str) -> int:
    if width % spec.head_width:
        raise ConversionError(f"{what} width {width} is not a multiple of head_width {spec.head_width}")
    return width // spec.head_width


def _require(sd: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in sd:
        raise ConversionError(f"not an open_clip / EVA-CLIP checkpoint: no {key!r}")
    return sd[key]


def text_prefix(sd: Mapping[str, Tensor]) -> str:
    return "text." if "text.token_embedding.weight" in sd else ""


def text_config_dict(sd: Mapping[str, Tensor], spec: OpenClipSpec) -> dict:
    """`CLIPTextConfig` arguments read from the text tower's tensors."""
    prefix = text_prefix(sd)
    vocab_size, width = _require(sd, prefix + "token_embedding.weight").shape
    return dict(
        vocab_size=vocab_size, hidden_size=width,
        intermediate_size=_require(sd, prefix + "transformer.resblocks.0.mlp.c_fc.weight").shape[0],
        num_hidden_layers=_count_blocks(sd, prefix), num_attention_heads=_heads(width, spec, "text"),
        max_position_embeddings=_require(sd, prefix + "positional_embedding").shape[0],
        hidden_act=spec.hidden_act, layer_norm_eps=spec.layer_norm_eps,
        # CLIP's BPE vocabulary ends with <|startoftext|>, <|endoftext|> (ids 49406, 49407 in OpenAI's).
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )


def projection_dim(sd: Mapping[str, Tensor]) -> int:
    return _require(sd, text_prefix(sd) + "text_projection").shape[1]


def open_clip_config(sd: Mapping[str, Tensor], spec: OpenClipSpec = OpenClipSpec()):
    """The `transformers.CLIPConfig` of an open_clip ViT state dict (sizes from the tensors)."""
    from transformers import CLIPConfig

    patch = _require(sd, "visual.conv1.weight")
    positions = _require(sd, "visual.positional_embedding").shape[0]
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise ConversionError(f"visual.positional_embedding has {positions} rows: not 1 + a square grid")
    vision = dict(
        hidden_size=patch.shape[0], patch_size=patch.shape[-1], image_size=patch.shape[-1] * grid,
        intermediate_size=_require(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0],
        num_hidden_layers=_count_blocks(sd, "visual."), num_attention_heads=_heads(patch.shape[0], spec, "vision"),
        hidden_act=spec.hidden_act, layer_norm_eps=spec.layer_norm_eps,
    )
    return CLIPConfig(text_config=text_config_dict(sd, spec), vision_config=vision, projection_dim=projection_dim(sd))


def convert_open_clip_state_dict(sd: Mapping[str, Tensor]) -> KeyMapReport:
    """Rename an open_clip ViT state dict onto `CLIPModel`'s keys (no key check: see `check_keys`)."""
    if "visual.proj" not in sd:
        raise ConversionError("not an open_clip ViT checkpoint: no 'visual.proj' (ResNet, timm or HF towers are "
                              "not supported)")
    return convert_state_dict(sd, (*TEXT_RULES, *VISION_RULES), TEXT_DROPS, "open_clip")


def load_open_clip_weights(sd: Mapping[str, Tensor], spec: OpenClipSpec = OpenClipSpec()):
    """A `transformers` `CLIPModel` holding the open_clip weights (strict: every key accounted for)."""
    from transformers import CLIPModel

    config = open_clip_config(sd, spec)
    report = convert_open_clip_state_dict(sd)
    with parameters_on_meta():  # no random initialisation: every parameter comes from the checkpoint
        model = CLIPModel(config).eval()
    check_keys(report, model.state_dict().keys())
    model.load_state_dict(report.state_dict, strict=True, assign=True)
    return model, report


__all__ = ["OpenClipSpec", "TEXT_RULES", "VISION_RULES", "block_rules", "convert_open_clip_state_dict",
           "load_open_clip_weights", "open_clip_config", "text_config_dict"]
