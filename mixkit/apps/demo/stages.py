"""BLIP-2's two stages on the demo's data: stage 1 (Q-Former ITC + ITM + ITG, ViT frozen), stage 2
(Q-Former + projection; ViT and LM frozen; captions and VQA pairs), and the pipeline saved from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from transformers import Blip2Config, PreTrainedTokenizerBase

from mixkit.apps.demo.config import DemoConfig
from mixkit.apps.demo.data import ImageTextSamples, TrainData, prompted_pairs
from mixkit.apps.demo.training import init_weights_, run_trainer
from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.reference import CAPTION_PROMPT, T5_CAPTION, T5_VQA, VQA_PROMPT
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.serialization import take_matching_weights
from mixkit.models.settings import PredictionSettings
from mixkit.pipelines.blip2 import Blip2Pipeline
from mixkit.train.collators import Stage1Collator, Stage2Collator
from mixkit.train.stage1_task import Stage1Batch, Stage1Task
from mixkit.train.stage2_task import Stage2Batch, Stage2Task

# Stage 2 adds the projection into the LM; nothing earlier has weights for it.
NEW_IN_STAGE2 = {"language_projection.weight", "language_projection.bias"}


def train_stage1(config: DemoConfig, data: TrainData, tokenizer: PreTrainedTokenizerBase,
                 model_config: Blip2Config, vision: dict[str, torch.Tensor],
                 output_dir: Path) -> tuple[Blip2Stage1Model, list[dict]]:
    torch.manual_seed(config.seed)
    model = init_weights_(Blip2Stage1Model(model_config))
    # Only the ViT: the rest starts fresh, as in BLIP-2. Every given weight must land somewhere.
    unexpected = model.load_state_dict(vision, strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f"stage-1 model: pretrained ViT weights it does not have: {unexpected[:5]}")
    model.lock_image_tower()
    rows = [{"image_index": r["image_index"], "text_input": r["caption"]} for r in data.captions]
    task = Stage1Task(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    losses = run_trainer("stage1", model.train(), ImageTextSamples(data.images, rows), Stage1Collator(tokenizer),
                         task, Stage1Batch, config, output_dir)
    return model.eval(), losses


def stage2_model(model_config: Blip2Config, vision: dict, language: dict, stage1: Blip2Stage1Model) -> Blip2Model:
    """Frozen ViT and LM from pretraining; Q-Former, queries and ln_vision from stage 1."""
    model = init_weights_(Blip2Model(model_config))
    # Later sources win: the pretrained ViT over stage 1's copy of it.
    state = {**stage1.state_dict(), **vision, **{f"language_model.{k}": v for k, v in language.items()}}
    missing = set(model.state_dict()) - take_matching_weights(model, state) - NEW_IN_STAGE2
    if missing:
        raise RuntimeError(f"stage-2 model: no weights for {sorted(missing)[:5]}")
    model.lock_frozen_parts()
    return model


def train_stage2(config: DemoConfig, data: TrainData, tokenizer: PreTrainedTokenizerBase,
                 model: Blip2Model, output_dir: Path) -> list[dict]:
    dataset = ImageTextSamples(data.images, prompted_pairs(data))
    collator = Stage2Collator(tokenizer, encoder_decoder=True)
    return run_trainer("stage2", model.train(), dataset, collator, Stage2Task(), Stage2Batch, config, output_dir)


def demo_settings(config: DemoConfig) -> PredictionSettings:
    """The reference T5 settings with the demo's beam width; no minimum caption length (the shortest
    shapes captions are 5 tokens, the reference minimum is 7)."""
    return PredictionSettings(CAPTION_PROMPT, VQA_PROMPT,
                              replace(T5_CAPTION, num_beams=config.num_beams, min_new_tokens=0),
                              replace(T5_VQA, num_beams=config.num_beams))


def save_pipeline(config: DemoConfig, model: Blip2Model, tokenizer: PreTrainedTokenizerBase,
                  directory: Path) -> Blip2Pipeline:
    """The trained model as a checkpoint folder that `mixkit predict` and `mixkit eval` load."""
    pipeline = Blip2Pipeline(model.eval(), tokenizer, ImageProcessorConfig(image_size=config.image_size),
                             demo_settings(config))
    pipeline.save_pretrained(directory)
    return pipeline
