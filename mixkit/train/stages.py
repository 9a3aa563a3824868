"""What each training stage puts together: model, frozen parts, tokenizer, collator, task and dataset.

The three stages share one loop (`Blip2Trainer`); they differ only in the parts built here.
- `blip2-stage1`: `Blip2Stage1Model`, ViT frozen, ITC + ITM + ITG on the Q-Former's BERT tokenizer.
- `blip2-stage2`: `Blip2Model`, ViT and LLM frozen, LM loss through the frozen LLM.
- `blip2-caption`: `Blip2Model` with the ViT trainable (LAVIS caption fine-tuning), prompt "a photo of ".
- `clip`: a `transformers` `CLIPModel`, contrastive loss over all processes (`mixkit.train.clip_stage`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mixkit.data.bad_images import SkipBadImages, collate_skipping_none
from mixkit.data.loading import load_dataset
from mixkit.data.shards import ShardedCaptionDataset, ShardStreamConfig, resolve_shards
from mixkit.data.transforms import ImageProcessorConfig, TrainImageTransform
from mixkit.models.blip2.modeling import Blip2Base, Blip2Model, read_weights_with_base
from mixkit.models.blip2.reference import reference_settings
from mixkit.models.settings import PredictionSettings
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.hub import resolve_checkpoint
from mixkit.models.serialization import take_matching_weights
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.collators import Stage1Collator, Stage2Collator
from mixkit.train.stage1_task import Stage1Batch, Stage1Task
from mixkit.train.stage2_task import Stage2Batch, Stage2Task

logger = logging.getLogger(__name__)


@dataclass
class StageParts:
    model: Blip2Base
    task: Any
    batch_type: type
    collator: Callable[[list[Any]], dict[str, Any]]
    dataset: Dataset
    save_extras: Callable[[Path], None]
    base_model: str | None


def load_extra_weights(model: Blip2Base, path: str) -> int:
    """Take every weight of `path` that the model has with the same shape (stage-1 Q-Former -> stage 2),
    log what was taken and what was left, and return the count."""
    source = read_weights_with_base(resolve_checkpoint(path))
    taken = take_matching_weights(model, source)
    left = sorted(set(source) - taken)
    logger.info("loaded %d tensors from %s; %d not used by this model (e.g. %s)", len(taken), path, len(left),
                ", ".join(left[:5]) or "none")
    if not taken:
        raise ValueError(f"--load_model_path {path}: none of its weights fit this model")
    return len(taken)


def _save_extras(tokenizer: PreTrainedTokenizerBase, image_size: int, settings: PredictionSettings | None,
                 directory: Path) -> None:
    tokenizer.save_pretrained(directory)
    ImageProcessorConfig(image_size=image_size).save(directory)
    if settings is not None:
        settings.save(directory)


def _shard_dataset(data: DataArguments, seed: int,
                   transform: TrainImageTransform | None = None) -> ShardedCaptionDataset:
    """The --train_shards stream, configured as `_dataset` configures the annotation-file dataset."""
    index = resolve_shards(data.train_shards)
    if index.kind != "caption_train":
        raise ValueError(f"--train_shards {data.train_shards}: {index.kind} shards; training reads caption_train "
                         "shards (mixkit data shards --kind caption_train)")
    # DDP needs the same number of equal batches on every rank; shard_loader (called by
    # Blip2Trainer.get_train_dataloader) sets the batch size.
    stream = ShardStreamConfig(shuffle=True, seed=seed, skip_bad_images=True, even_batches=True)
    transform = transform or TrainImageTransform(ImageProcessorConfig(image_size=data.image_size))
    dataset = ShardedCaptionDataset(index, transform, stream)
    dataset.seed_augmentation(seed)
    logger.info("training on %d samples in %d shards from %s (dataset_name and data_files not used)",
                index.num_samples, len(index.shards), data.train_shards)
    return dataset


def _dataset(data: DataArguments, seed: int, transform: TrainImageTransform | None = None) -> Dataset:
    """`transform`: the stage's own train transform (default LAVIS's crop + flip at --image_size)."""
    if data.train_shards:
        return _shard_dataset(data, seed, transform)
    dataset = load_dataset(data.dataset_name, data_files=data.data_files, split="train",
                           image_root=data.image_root, task="caption", image_size=data.image_size,
                           transform=transform)
    dataset.check_image_files()  # a missing file stops the run before training; a corrupt one is skipped later
    dataset.seed_augmentation(seed)
    return SkipBadImages(dataset)


def _model(stage: str, model_dir: Path, args: ModelArguments) -> Blip2Base:
    model_class = Blip2Stage1Model if stage == "blip2-stage1" else Blip2Model
    model = model_class.from_pretrained(model_dir)
    if args.load_model_path:
        load_extra_weights(model, args.load_model_path)
    if isinstance(model, Blip2Model):
        model.lock_language_model(keep_dropout=args.language_model_dropout)
    if args.freeze_vit:
        model.lock_image_tower()
    if args.frozen_dtype == "bf16":
        cast_frozen_parts(model, torch.bfloat16)
    return model.train()


def cast_frozen_parts(model: Blip2Base, dtype: torch.dtype) -> None:
    """The frozen ViT trunk and frozen LLM in `dtype`; trained parts stay fp32 (their optimizer state and
    updates need it). `train_cli.check_frozen_dtype` has made sure frozen weights are not saved."""
    if model.vision_frozen:
        model.vision_model.embeddings.to(dtype)
        model.vision_model.encoder.to(dtype)
    if isinstance(model, Blip2Model):
        model.language_model.to(dtype)


def build_stage(stage: str, model_args: ModelArguments, data: DataArguments, seed: int = 42) -> StageParts:
    if stage == "clip":
        from mixkit.train.clip_stage import build_clip_stage  # imports this module (StageParts)

        return build_clip_stage(model_args, data, seed)
    if stage == "instructblip":
        from mixkit.train.instructblip_stage import build_instructblip_stage  # imports this module (StageParts)

        return build_instructblip_stage(model_args, data, seed)
    if stage.startswith("albef-"):
        from mixkit.train.albef_stage import build_albef_stage  # imports this module (StageParts)

        return build_albef_stage(stage, model_args, data, seed)
    if stage.startswith("blip-"):
        from mixkit.train.blip_stage import build_blip_stage  # imports this module (StageParts)

        return build_blip_stage(stage, model_args, data, seed)
    if stage.startswith("minigpt"):
        from mixkit.train.minigpt4_stage import build_minigpt4_stage  # imports this module (StageParts)

        return build_minigpt4_stage(stage, model_args, data, seed)
    model_dir = resolve_checkpoint(model_args.model_name_or_path)
    model = _model(stage, model_dir, model_args)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if isinstance(model, Blip2Stage1Model):
        task: Any = Stage1Task(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
        single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
        collator: Any = Stage1Collator(tokenizer, max_text_length=data.max_text_length, pad_to_longest=single_process)
        batch_type: type = Stage1Batch
        settings = None
    else:
        task = Stage2Task()
        collator = Stage2Collator(tokenizer, encoder_decoder=model.is_encoder_decoder, prompt=data.prompt,
                                  max_text_length=data.max_text_length)
        batch_type = Stage2Batch
        settings = reference_settings(model.is_encoder_decoder, prompt=data.prompt.strip())
    return StageParts(
        model=model,
        task=task,
        batch_type=batch_type,
        collator=partial(collate_skipping_none, collate_fn=collator),
        dataset=_dataset(data, seed),
        save_extras=partial(_save_extras, tokenizer, data.image_size, settings),
        base_model=str(model_dir) if model_args.save_trainable_only else None,
    )

