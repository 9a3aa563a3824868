"""`mixkit train clip`: the parts of a CLIP contrastive training run for the shared loop (`Blip2Trainer`).

The starting checkpoint is a `transformers` CLIP folder (a catalogue name such as `clip-vit-b-32`, or a folder:
a random one made with `transformers.CLIPModel(config).save_pretrained` or `mixkit.testing.build_tiny_clip`
trains from scratch). The run writes the same kind of folder (full weights, tokenizer, image processor), which
`mixkit predict classify` and `ClipPipeline` load.

Images: open_clip's train transform (github:mlfoundations/open_clip, commit 89fb801, `src/open_clip/transform.py`
`AugmentationCfg.scale = (0.9, 1.0)`: RandomResizedCrop over 90-100% of the area, bicubic, no flip) with the
checkpoint's own mean/std. Captions: the caption datasets' `text_input`, tokenized by the checkpoint's tokenizer
to a fixed length (`Stage1Collator`: right padding, truncation that keeps the end token CLIP pools at).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, PreTrainedTokenizerBase

from mixkit.data.bad_images import collate_skipping_none
from mixkit.data.transforms import ImageProcessorConfig, TrainImageTransform
from mixkit.models.hub import check_checkpoint_dir, resolve_checkpoint
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.clip_task import ClipBatch, ClipTask
from mixkit.train.collators import Stage1Collator
from mixkit.train.stages import StageParts, _dataset

logger = logging.getLogger(__name__)
CROP_SCALE = (0.9, 1.0)  # open_clip's AugmentationCfg.scale


def lock_image_tower(model: CLIPModel) -> None:
    """Freeze the vision tower and its projection (open_clip's `lock_image_tower` with no unlocked groups; LiT)."""
    for parameter in [*model.vision_model.parameters(), *model.visual_projection.parameters()]:
        parameter.requires_grad_(False)


def load_clip_model(model_dir: Path, freeze_vision: bool) -> CLIPModel:
    files = check_checkpoint_dir(model_dir)
    if files.processor is None:
        raise FileNotFoundError(f"{model_dir}: no preprocessor_config.json (CLIP's image processor)")
    model = CLIPModel.from_pretrained(str(model_dir), dtype=torch.float32)
    if freeze_vision:
        lock_image_tower(model)
        logger.warning("clip: vision tower frozen (--freeze_vit true: locked-image tuning); "
                       "--freeze_vit false trains both towers, as CLIP pretraining does")
    return model.train()


def train_transform(model: CLIPModel, image_processor: Any, data: DataArguments) -> TrainImageTransform:
    """open_clip's crop at the model's image size, normalised with the checkpoint's mean and std."""
    size = model.config.vision_config.image_size
    if data.image_size != size:
        raise ValueError(f"--image_size {data.image_size}: this CLIP model takes {size} px images "
                         f"(vision_config.image_size); pass --image_size {size}")
    config = ImageProcessorConfig(image_size=size, mean=tuple(image_processor.image_mean),
                                  std=tuple(image_processor.image_std), min_scale=CROP_SCALE[0],
                                  max_scale=CROP_SCALE[1])
    return TrainImageTransform(config, flip=False)


def text_collator(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, data: DataArguments) -> Stage1Collator:
    context = model.config.text_config.max_position_embeddings
    if data.max_text_length > context:
        raise ValueError(f"--max_text_length {data.max_text_length}: this CLIP text tower has {context} positions")
    return Stage1Collator(tokenizer, max_text_length=data.max_text_length)


def _save_extras(tokenizer: PreTrainedTokenizerBase, image_processor: Any, directory: Path) -> None:
    tokenizer.save_pretrained(directory)
    image_processor.save_pretrained(directory)


def build_clip_stage(model_args: ModelArguments, data: DataArguments, seed: int = 42) -> StageParts:
    model_dir = resolve_checkpoint(model_args.model_name_or_path)
    model = load_clip_model(model_dir, model_args.freeze_vit)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    image_processor = AutoImageProcessor.from_pretrained(str(model_dir))
    return StageParts(
        model=model,
        task=ClipTask(),
        batch_type=ClipBatch,
        collator=partial(collate_skipping_none, collate_fn=text_collator(model, tokenizer, data)),
        dataset=_dataset(data, seed, train_transform(model, image_processor, data)),
        save_extras=partial(_save_extras, tokenizer, image_processor),
        base_model=None,  # every weight trains (or is the frozen tower it started from): a complete CLIP folder
    )
