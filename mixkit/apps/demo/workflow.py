"""`run_demo`: the whole workflow, step by step, into one output folder.

    shapes data -> tokenizers -> "pretrained" frozen ViT and LM -> stage 1 -> stage 2 -> held-out
    evaluation and baselines -> predictions on a few images -> metrics.json and report.html.

The steps run in a fixed order on one seeded RNG: every stage reseeds, but the new stage-2 projection is
initialised from wherever stage 1 left the generator, so reordering them changes the results.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from mixkit.apps.demo.config import DemoConfig, blip2_config
from mixkit.apps.demo.data import TrainData, load_train_data, train_tokenizers, write_data
from mixkit.apps.demo.evaluation import baseline_scores, evaluate_model, predict_examples
from mixkit.apps.demo.metrics import build_metrics
from mixkit.apps.demo.pretraining import pretrain_language, pretrain_vision
from mixkit.apps.demo.progress import Progress, Timer
from mixkit.apps.demo.report import write_report
from mixkit.apps.demo.stages import save_pipeline, stage2_model, train_stage1, train_stage2
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.utils.io import write_json

NUM_STEPS = 8


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


@dataclass
class DemoRun:
    """What every step of one run reports to: its settings, work folder, progress lines and timer."""

    config: DemoConfig
    work: Path
    progress: Progress
    timer: Timer


def train_models(run: DemoRun,
                 data: TrainData) -> tuple[Blip2Model, PreTrainedTokenizerBase, dict[str, list[dict]]]:
    """Tokenizers, the pretrained ViT and LM, stages 1 and 2: the stage-2 model, its tokenizer, all losses."""
    config, runs, step, timer = run.config, run.work / "runs", run.progress.step, run.timer
    step("training the tokenizers (T5 for the LM, BERT for the Q-Former)")
    t5_tokenizer, bert_tokenizer = train_tokenizers(data, run.work / "tokenizers", config.vocab_size)
    stage1_config = blip2_config(config, len(t5_tokenizer), len(bert_tokenizer), stage1=True)
    stage2_config = blip2_config(config, len(t5_tokenizer), len(bert_tokenizer), stage1=False)
    step("pretraining the image encoder (colour, kind, size per grid cell)")
    vision, vision_losses = timer("vision", pretrain_vision, config, data, stage2_config, runs)
    step("pretraining the language model (scene description + prompt -> text)")
    language, language_losses = timer("language", pretrain_language, config, data, t5_tokenizer, stage2_config,
                                      runs)
    step("stage 1: Q-Former ITC + ITM + ITG, ViT frozen")
    stage1, stage1_losses = timer("stage1", train_stage1, config, data, bert_tokenizer, stage1_config, vision, runs)
    step("stage 2: Q-Former + projection, ViT and LM frozen, captions and VQA")
    model = stage2_model(stage2_config, vision, language, stage1)
    stage2_losses = timer("stage2", train_stage2, config, data, t5_tokenizer, model, runs)
    losses = {"vision": vision_losses, "language": language_losses, "stage1": stage1_losses,
              "stage2": stage2_losses}
    return model, t5_tokenizer, losses


def run_demo(config: DemoConfig, output: Path) -> dict[str, Any]:
    """The whole workflow into `output`; returns the metrics (also in `output/metrics.json`)."""
    output.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed, config.threads)
    run = DemoRun(config, output / "work", Progress(NUM_STEPS), Timer())
    run.progress.step(f"writing the shapes data ({config.num_train} train / {config.num_test} test images)")
    paths = run.timer("data", write_data, config, run.work / "data")
    data = run.timer("load", load_train_data, paths, config)
    model, tokenizer, losses = train_models(run, data)
    checkpoint = run.work / "checkpoint"
    pipeline = save_pipeline(config, model, tokenizer, checkpoint)
    run.progress.step(f"evaluating on the held-out split (checkpoint: {checkpoint})")
    evaluation = run.timer("eval", evaluate_model, checkpoint, run.work / "eval", paths)
    baselines = run.timer("baselines", baseline_scores, paths, run.work / "eval" / "baselines")
    run.progress.step("predicting examples and writing the report")
    examples = predict_examples(pipeline, paths, config.num_examples, output / "images")
    metrics = build_metrics(config, evaluation, baselines, losses, run.timer.seconds, run.progress.elapsed())
    write_json(output / "metrics.json", metrics, indent=2)
    write_report(output, metrics, losses, examples)
    return metrics
