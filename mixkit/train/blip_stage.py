"""`mixkit train blip-pretrain | blip-caption | blip-vqa`: the parts of a BLIP run for the shared loop.

| stage | architecture trained | loss (`mixkit.train.blip_task`) | records |
| --- | --- | --- | --- |
| `blip-pretrain` | `BlipForPreTraining` | ITC (momentum distillation, queues) + ITM + LM | captions |
| `blip-caption` | `BlipForConditionalGeneration` | LM after the prompt (LAVIS "a picture of ") | captions |
| `blip-vqa` | `BlipForQuestionAnswering` | weighted answer LM, question encoded with `[ENC]` first | VQA (answers) |

The starting checkpoint is any BLIP folder holding the heads the stage trains (a mixkit or `transformers` folder,
or a LAVIS `.pth` converted with `mixkit.models.blip.convert_lavis`): LAVIS fine-tunes from its pretraining
checkpoint, so a `BlipForPreTraining` folder can start every stage; the heads the stage does not train are left
out (`load_blip_for`). The whole model trains, as in LAVIS; `--freeze_vit true` freezes the ViT (small-memory runs).
The run writes a complete folder of the trained architecture (weights, tokenizer, preprocessing, settings) that
`mixkit.load_pipeline` reads. Not done here: LAVIS's RandAugment in `blip_image_train` (mixkit's train transform is
crop + flip) and the encoder/decoder weight sharing of LAVIS's pretraining (`tie_enc_dec_weights`). Checkpoints
carry the momentum encoders, queues and alpha ramp (`task_state.safetensors`): a resumed run continues them.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from transformers import AutoTokenizer, BlipConfig, PreTrainedTokenizerBase

from mixkit.data.bad_images import SkipBadImages, collate_skipping_none
from mixkit.data.loading import load_dataset
from mixkit.models.blip.modeling import BlipModel, architecture_of, drop_tied_duplicates
from mixkit.models.blip.reference import CAPTION, lavis_settings
from mixkit.models.hub import check_checkpoint_dir, resolve_checkpoint
from mixkit.models.serialization import CheckpointMismatchError, load_weights_strict, read_weights
from mixkit.models.settings import GenerationSettings, PredictionSettings
from mixkit.pipelines.blip import special_token_ids
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.blip_task import (BlipCaptionBatch, BlipCaptionCollator, BlipCaptionTask, BlipPretrainTask,
                                    BlipTextBatch, BlipVqaBatch, BlipVqaCollator, BlipVqaTask)
from mixkit.train.collators import Stage1Collator
from mixkit.train.stages import StageParts, _dataset, _save_extras

logger = logging.getLogger(__name__)

ARCHITECTURE_OF_STAGE = {
    "blip-pretrain": "BlipForPreTraining",
    "blip-caption": "BlipForConditionalGeneration",
    "blip-vqa": "BlipForQuestionAnswering",
}
# LAVIS's caption search counts [DEC] + the prompt in max_len / min_len (20 / 5, see mixkit.models.blip.reference).
LAVIS_CAPTION_MAX_LEN, LAVIS_CAPTION_MIN_LEN = 20, 5


def load_blip_for(directory: Path, architecture: str) -> BlipModel:
    """The checkpoint as `architecture`: its own weights when it is one, else the subset that architecture has
    (every key it needs must be there, `temp` excepted: `transformers` folders have none)."""
    config = BlipConfig.from_pretrained(directory)
    if architecture_of(config) == architecture:
        return BlipModel.from_pretrained(directory)
    model = BlipModel(config, architecture)
    own = model.state_dict()
    state = {key: value for key, value in drop_tied_duplicates(read_weights(directory)).items() if key in own}
    try:
        load_weights_strict(model, state, allowed_missing_prefixes=("temp",))
    except CheckpointMismatchError as error:
        raise ValueError(f"--model_name_or_path {directory}: a {architecture_of(config)} checkpoint lacks parts of "
                         f"{architecture} ({error}); start from a {architecture} or BlipForPreTraining "
                         "folder") from None
    logger.info("%s: %s weights taken from a %s checkpoint", directory, architecture, architecture_of(config))
    return model


def caption_settings(tokenizer: PreTrainedTokenizerBase, prompt: str) -> PredictionSettings:
    """LAVIS's caption search (beams 3, 20 / 5 tokens counting [DEC] and the prompt) for the prompt trained with."""
    prompt_tokens = 1 + len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    caption = GenerationSettings(num_beams=CAPTION.num_beams, length_penalty=CAPTION.length_penalty,
                                 max_new_tokens=max(1, LAVIS_CAPTION_MAX_LEN - prompt_tokens),
                                 min_new_tokens=max(0, LAVIS_CAPTION_MIN_LEN - prompt_tokens))
    reference = lavis_settings()
    return PredictionSettings(prompt, reference.vqa_prompt, caption, reference.vqa)


def _vqa_dataset(data: DataArguments, seed: int) -> Dataset:
    if data.train_shards:
        raise ValueError("--train_shards holds caption shards; blip-vqa reads VQA records (--dataset_name "
                         "coco_vqa, custom_vqa or shapes with --data_files)")
    dataset = load_dataset(data.dataset_name, data_files=data.data_files, split="train", image_root=data.image_root,
                           task="vqa", image_size=data.image_size)
    dataset.check_image_files()
    dataset.seed_augmentation(seed)
    return SkipBadImages(dataset)


def samples_per_epoch(dataset: Dataset) -> int:
    """Samples in one epoch over every process (a shard stream's index counts them all)."""
    index = getattr(dataset, "index", None)
    return int(index.num_samples) if index is not None else len(dataset)


def _model(stage: str, model_dir: Path, args: ModelArguments) -> BlipModel:
    model = load_blip_for(model_dir, ARCHITECTURE_OF_STAGE[stage])
    freeze_vit_if_asked(model, args, stage)
    return model.train()


def freeze_vit_if_asked(model: BlipModel, args: ModelArguments, stage: str) -> None:
    """`--freeze_vit true` locks the ViT (small-memory runs); LAVIS's BLIP and ALBEF recipes train it."""
    if args.freeze_vit:
        model.lock_image_tower()
        logger.warning("%s: ViT frozen (--freeze_vit true); LAVIS's recipes train it (--freeze_vit false)", stage)


def _task_parts(stage: str, model: BlipModel, tokenizer: PreTrainedTokenizerBase, model_args: ModelArguments,
                data: DataArguments, dataset: Dataset, seed: int, model_dir: Path) -> tuple[Any, type, Any]:
    """(task, batch type, collator) of the stage."""
    bos, enc = special_token_ids(tokenizer, model, model_dir)
    if stage == "blip-pretrain":
        task = BlipPretrainTask(model, enc, bos, tokenizer.pad_token_id, model_args.queue_size, model_args.momentum,
                                model_args.alpha, samples_per_epoch(dataset), seed)
        return task, BlipTextBatch, Stage1Collator(tokenizer, max_text_length=data.max_text_length)
    if stage == "blip-caption":
        return BlipCaptionTask(), BlipCaptionBatch, BlipCaptionCollator(tokenizer, bos, data.prompt,
                                                                        data.max_text_length)
    return BlipVqaTask(), BlipVqaBatch, BlipVqaCollator(tokenizer, enc, bos, data.max_text_length)


def build_blip_stage(stage: str, model_args: ModelArguments, data: DataArguments, seed: int = 42) -> StageParts:
    if stage not in ARCHITECTURE_OF_STAGE:
        raise ValueError(f"unknown BLIP stage {stage!r}; known: {', '.join(ARCHITECTURE_OF_STAGE)}")
    model_dir = resolve_checkpoint(model_args.model_name_or_path)
    if not check_checkpoint_dir(model_dir).tokenizer:
        raise FileNotFoundError(f"{model_dir}: no tokenizer files (BLIP's BERT tokenizer with [DEC] and [ENC])")
    model = _model(stage, model_dir, model_args)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dataset = _vqa_dataset(data, seed) if stage == "blip-vqa" else _dataset(data, seed)
    task, batch_type, collator = _task_parts(stage, model, tokenizer, model_args, data, dataset, seed, model_dir)
    settings = caption_settings(tokenizer, data.prompt) if stage == "blip-caption" else lavis_settings()
    return StageParts(
        model=model,
        task=task,
        batch_type=batch_type,
        collator=partial(collate_skipping_none, collate_fn=collator),
        dataset=dataset,
        save_extras=partial(_save_extras, tokenizer, data.image_size, settings),
        base_model=None,  # BLIP trains (nearly) every weight: checkpoints are complete folders
    )


__all__ = ["ARCHITECTURE_OF_STAGE", "build_blip_stage", "caption_settings", "load_blip_for"]
