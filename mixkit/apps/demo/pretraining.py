"""The "pretrained" frozen parts BLIP-2 assumes, made cheaply: a ViT and a Flan-T5-style LM.

The ViT learns every shape's colour, kind and size per grid cell plus the background (supervised); the T5
learns to answer questions and write captions from a text description of the scene. Stage 2 then only has
to teach the Q-Former to stand in for that description: the same job the real Q-Former does for a real LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSeq2SeqLM, Blip2Config, PreTrainedTokenizerBase

from mixkit.apps.demo.config import DemoConfig
from mixkit.apps.demo.data import ImageTextSamples, TrainData, describe_scene, prompted_pairs
from mixkit.apps.demo.training import init_weights_, run_trainer
from mixkit.data.shapes import BACKGROUND_COLOURS, KINDS, POSITIONS, SHAPE_COLOURS, SIZES, Scene
from mixkit.models.blip2.vision import VisionTransformer
from mixkit.train.collators import Stage2Collator
from mixkit.train.stage2_task import shift_right

ATTRIBUTE_CLASSES = (len(SHAPE_COLOURS) + 1, len(KINDS) + 1, len(SIZES) + 1)


@dataclass
class LossOnly:
    loss: torch.Tensor


# ------------------------------------------------------------------------- the ViT


def scene_targets(scene: Scene) -> torch.Tensor:
    """Per grid cell: colour, kind and size (0 = empty); then the background: [28] class indices."""
    cells = {(s.row, s.col): s for s in scene.shapes}
    colours, kinds = list(SHAPE_COLOURS), list(KINDS)
    targets = []
    for cell in sorted(POSITIONS):
        shape = cells.get(cell)
        targets += [0, 0, 0] if shape is None else [
            1 + colours.index(shape.colour), 1 + kinds.index(shape.kind), 1 + SIZES.index(shape.size)]
    return torch.tensor(targets + [list(BACKGROUND_COLOURS).index(scene.background)])


class VisionPretrainModel(nn.Module):
    """The BLIP-2 ViT (same `vision_model.*` keys) with a linear head over all its patch features."""

    def __init__(self, config: Blip2Config):
        super().__init__()
        self.vision_model = VisionTransformer(config.vision_config)
        tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1
        outputs = len(POSITIONS) * sum(ATTRIBUTE_CLASSES) + len(BACKGROUND_COLOURS)
        self.head = nn.Linear(tokens * config.vision_config.hidden_size, outputs)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.vision_model(pixel_values).flatten(1))


@dataclass
class AttributeBatch:
    pixel_values: torch.Tensor
    targets: torch.Tensor


@dataclass
class AttributeTask:
    """Sum of cross-entropies: each cell's colour, kind and size, and the background."""

    def compute(self, model: VisionPretrainModel, batch: AttributeBatch) -> LossOnly:
        logits = model(batch.pixel_values)
        sizes = [*ATTRIBUTE_CLASSES] * len(POSITIONS) + [len(BACKGROUND_COLOURS)]
        parts = torch.split(logits, sizes, dim=1)
        loss = sum(F.cross_entropy(part, batch.targets[:, i]) for i, part in enumerate(parts))
        return LossOnly(loss / len(parts))


def collate_attributes(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([s["image"] for s in samples]),
            "targets": torch.stack([s["targets"] for s in samples])}


def pretrain_vision(config: DemoConfig, data: TrainData, model_config: Blip2Config,
                    output_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The ViT's weights (`vision_model.*`) after attribute training, and its losses."""
    torch.manual_seed(config.seed)
    model = init_weights_(VisionPretrainModel(model_config))
    rows = [{"image_index": i, "targets": scene_targets(scene)} for i, scene in enumerate(data.scenes)]
    losses = run_trainer("vision", model, ImageTextSamples(data.images, rows), collate_attributes,
                         AttributeTask(), AttributeBatch, config, output_dir)
    return {k: v for k, v in model.state_dict().items() if k.startswith("vision_model.")}, losses


# ------------------------------------------------------------------------- the LM


@dataclass
class TextBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    decoder_attention_mask: torch.Tensor


@dataclass
class TextTask:
    """Text-only seq2seq loss of the LM itself: the stage-2 loss without the image, averaged per sequence."""

    def compute(self, model: nn.Module, batch: TextBatch) -> LossOnly:
        config = model.config
        decoder_ids = shift_right(batch.labels, config.decoder_start_token_id, config.pad_token_id)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       decoder_input_ids=decoder_ids, decoder_attention_mask=batch.decoder_attention_mask).logits
        # Mean per sequence, then over the batch: a 1-token answer counts as much as a 15-token caption.
        per_token = F.cross_entropy(logits.transpose(1, 2).float(), batch.labels, ignore_index=-100, reduction="none")
        labelled = (batch.labels != -100).float()
        return LossOnly(((per_token * labelled).sum(1) / labelled.sum(1).clamp(min=1)).mean())


@dataclass
class DescribedCollator:
    """Prompt rows -> `TextBatch` fields: the scene description goes in front of the prompt."""

    tokenizer: PreTrainedTokenizerBase
    scenes: list[Scene]

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        described = [{**s, "text_input": describe_scene(self.scenes[s["image_index"]]) + " " + s["text_input"]}
                     for s in samples]
        # `pixel_values` stays: `Blip2Trainer` reads a batch without it as "every image was unreadable".
        return Stage2Collator(self.tokenizer, encoder_decoder=True, max_text_length=96)(described)


def pretrain_language(config: DemoConfig, data: TrainData, tokenizer: PreTrainedTokenizerBase,
                      model_config: Blip2Config, output_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The T5's weights after learning description + prompt -> text, and its losses."""
    torch.manual_seed(config.seed)
    model = init_weights_(AutoModelForSeq2SeqLM.from_config(model_config.text_config))
    losses = run_trainer("language", model, ImageTextSamples(data.images, prompted_pairs(data)),
                         DescribedCollator(tokenizer, data.scenes), TextTask(), TextBatch, config, output_dir)
    return model.state_dict(), losses
