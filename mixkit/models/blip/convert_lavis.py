"""Convert LAVIS BLIP `.pth` checkpoints (caption, VQA, retrieval, pretrain) into mixkit's BLIP layout.

Declarative, as `mixkit.models.blip2.convert_lavis`: ordered regex renames, deliberate drops each with a reason,
then a strict load that names every missing or unexpected key. LAVIS facts (commit 506965b):
- `lavis/models/vit.py`: `VisionTransformer` has `cls_token` [1, 1, D], `pos_embed` [1, 1 + P, D],
  `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}` (qkv with a full bias), a
  final `norm`; its LayerNorms use eps 1e-6 (`transformers`' converted configs say 1e-5).
- `lavis/models/med.py`: the BERT keys are `transformers`' BERT keys; `embeddings.position_ids` is a persistent
  buffer, so it is in every file.
- `blip_retrieval.py` / `blip_pretrain.py` keep momentum copies (`*_m`) and feature queues for training only.
- The decoder's output matrix and bias are tied to its word embeddings and `cls.predictions.bias`; files hold both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import BlipConfig

from mixkit.models.blip.modeling import TIED_DUPLICATES, BlipModel, drop_tied_duplicates
from mixkit.models.serialization import load_weights_strict


@dataclass(frozen=True)
class Rename:
    pattern: str  # anchored regex over the LAVIS key
    template: str  # `re` replacement


@dataclass(frozen=True)
class Drop:
    pattern: str
    reason: str


# The BERT parts, the projections, the ITM head and `temp` already carry mixkit's (transformers') names.
KEEP_NAMES = Rename(r"^(text_encoder|text_decoder|vision_proj|text_proj|itm_head|temp)(\..*)?$", r"\1\2")
_BLOCK = r"^visual_encoder\.blocks\.(\d+)\."
_LAYER = r"vision_model.encoder.layers.\1."
RENAMES: tuple[Rename, ...] = (
    Rename(r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    Rename(r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    Rename(r"^visual_encoder\.patch_embed\.proj\.(weight|bias)$", r"vision_model.embeddings.patch_embedding.\1"),
    Rename(_BLOCK + r"norm1\.(weight|bias)$", _LAYER + r"layer_norm1.\2"),
    Rename(_BLOCK + r"norm2\.(weight|bias)$", _LAYER + r"layer_norm2.\2"),
    Rename(_BLOCK + r"attn\.qkv\.(weight|bias)$", _LAYER + r"self_attn.qkv.\2"),
    Rename(_BLOCK + r"attn\.proj\.(weight|bias)$", _LAYER + r"self_attn.projection.\2"),
    Rename(_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)$", _LAYER + r"mlp.\2.\3"),
    Rename(r"^visual_encoder\.norm\.(weight|bias)$", r"vision_model.post_layernorm.\1"),
    KEEP_NAMES,
)
DROPS: tuple[Drop, ...] = (
    Drop(r"^(visual_encoder_m|text_encoder_m|text_decoder_m|vision_proj_m|text_proj_m)\.",
         "momentum copy: a training-time target of the ITC distillation, not used for inference"),
    Drop(r"^(image_queue|text_queue|idx_queue|queue_ptr)$", "ITC feature queue: training state"),
    Drop(r"\.embeddings\.position_ids$", "LAVIS's persistent buffer of 0..max_positions-1, rebuilt here"),
)


class ConversionError(ValueError):
    """A LAVIS key that no rule converts or drops: named, never silently ignored."""


def convert_lavis_state(lavis_state: Mapping[str, torch.Tensor], renames: tuple[Rename, ...] = RENAMES,
                        drops: tuple[Drop, ...] = DROPS, duplicates: Mapping[str, str] = TIED_DUPLICATES,
                        ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(mixkit state dict, the LAVIS keys dropped on purpose). An unknown key raises `ConversionError`.
    `renames` / `drops` / `duplicates` (tied copies, see `drop_tied_duplicates`): BLIP's by default; ALBEF
    (`mixkit.models.albef.convert_lavis`) passes its own."""
    converted: dict[str, torch.Tensor] = {}
    dropped, unmapped = [], []
    for key, value in lavis_state.items():
        if any(re.search(drop.pattern, key) for drop in drops):
            dropped.append(key)
            continue
        rule = next((rule for rule in renames if re.match(rule.pattern, key)), None)
        if rule is None:
            unmapped.append(key)
            continue
        converted[re.sub(rule.pattern, rule.template, key)] = value
    if unmapped:
        raise ConversionError(f"{len(unmapped)} LAVIS keys have no conversion rule: {', '.join(unmapped[:20])}")
    return drop_tied_duplicates(converted, dict(duplicates)), dropped


def read_lavis_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A LAVIS `.pth` (its state dict under "model"), read without unpickling code (`weights_only=True`)."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    return checkpoint["model"] if isinstance(checkpoint, dict) and "model" in checkpoint else checkpoint


def convert_lavis_blip(lavis_state: Mapping[str, torch.Tensor], config: BlipConfig, architecture: str) -> BlipModel:
    """A `BlipModel` of `architecture` holding the LAVIS weights, loaded strictly (`CheckpointMismatchError`
    names every missing or unexpected key). `config` describes the LAVIS model (vision eps 1e-6, see above)."""
    state, _ = convert_lavis_state(lavis_state)
    model = BlipModel(config, architecture)
    load_weights_strict(model, state)
    return model.eval()


__all__ = ["ConversionError", "DROPS", "RENAMES", "convert_lavis_blip", "convert_lavis_state", "read_lavis_file"]
