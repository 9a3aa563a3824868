"""`run_clip_demo`: a tiny CLIP trained from scratch on the shapes captions, then zero-shot classification of
held-out images, against chance and against the same model before training.

    shapes data -> CLIP BPE tokenizer -> tiny CLIPModel (random) -> contrastive training on `Blip2Trainer` with
    `ClipTask` (open_clip's recipe: symmetric InfoNCE, learnable logit scale clamped at 100, AdamW without decay
    on gains, biases, logit scale and position embeddings, warm-up + cosine) -> both models saved as
    `transformers` CLIP folders -> zero-shot top-1 on three tasks -> metrics.json and report.html.

Images are decoded once and kept in memory without augmentation, as in the BLIP-2 demo (a crop or a flip would
change what "at the top left" means).
"""

from __future__ import annotations

import resource
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPImageProcessor, CLIPModel, PreTrainedTokenizerBase

from mixkit.apps.demo.clip_config import STAGE, ClipDemoConfig, clip_model_config, shapes_config
from mixkit.apps.demo.clip_report import write_clip_report
from mixkit.apps.demo.clip_zeroshot import build_tasks, evaluate, held_out_scenes, load_test_images
from mixkit.apps.demo.data import ImageTextSamples, load_images
from mixkit.apps.demo.metrics import peak_memory_mib
from mixkit.apps.demo.progress import Progress, Timer
from mixkit.apps.demo.training import run_trainer
from mixkit.apps.demo.workflow import seed_everything
from mixkit.data.shapes import ShapesPaths, image_relpath, write_shapes_dataset
from mixkit.data.text import clean_caption
from mixkit.data.tokenizers import train_clip_tokenizer
from mixkit.pipelines.clip import ClipPipeline
from mixkit.train.clip_task import ClipBatch, ClipTask
from mixkit.train.collators import Stage1Collator
from mixkit.utils.io import read_json, write_json
from mixkit.utils.versions import library_versions

NUM_STEPS = 6
# open_clip's optimizer for ViT models (github:mlfoundations/open_clip, commit 89fb801,
# src/open_clip_train/params.py: get_default_params betas (0.9, 0.98), eps 1e-6, from the CLIP paper; --wd 0.2)
# and its cosine schedule, which ends at 0 (src/open_clip_train/scheduler.py cosine_lr).
OPEN_CLIP_OPTIMIZER = dict(weight_decay=0.2, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6, eta_min=0.0)


def caption_rows(paths: ShapesPaths) -> tuple[list[str], list[dict[str, Any]]]:
    """The training images (file order) and one row per caption: {"image_index", "text_input"}."""
    records = read_json(paths.caption_train)
    order = sorted({record["image"] for record in records})
    index = {path: i for i, path in enumerate(order)}
    return order, [{"image_index": index[r["image"]], "text_input": clean_caption(r["caption"])} for r in records]


def save_clip_folder(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, image_size: int, directory: Path) -> Path:
    """A `transformers` CLIP folder (weights, tokenizer, image processor) that `ClipPipeline` loads."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    crop = {"height": image_size, "width": image_size}
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=crop).save_pretrained(directory)
    return directory


def train_clip(config: ClipDemoConfig, paths: ShapesPaths, work: Path,
               timer: Timer, progress: Progress) -> tuple[Path, Path, list[dict]]:
    """Tokenizer, the untrained model's folder, training, the trained model's folder; and the logged losses."""
    order, rows = caption_rows(paths)
    progress.step(f"training the CLIP BPE tokenizer on {len(rows)} captions")
    tokenizer = train_clip_tokenizer([row["text_input"] for row in rows], work / "tokenizer", config.bpe_merges)
    torch.manual_seed(config.seed)
    model = CLIPModel(clip_model_config(config, tokenizer))
    untrained = save_clip_folder(model, tokenizer, config.image_size, work / "untrained")
    progress.step(f"contrastive training: {config.steps[STAGE]} steps at batch {config.batch_size}")
    images = timer("load", load_images, paths.root, order, config.image_size)
    dataset = ImageTextSamples(images, rows)
    collator = Stage1Collator(tokenizer, max_text_length=config.max_text_length)
    losses = timer(STAGE, partial(run_trainer, **OPEN_CLIP_OPTIMIZER), STAGE, model.train(), dataset, collator,
                   ClipTask(), ClipBatch, config, work / "runs")
    trained = save_clip_folder(model.eval(), tokenizer, config.image_size, work / "checkpoint")
    return untrained, trained, losses


def zero_shot(config: ClipDemoConfig, paths: ShapesPaths, untrained: Path,
              trained: Path) -> tuple[list, dict[str, dict], dict[str, dict]]:
    """The tasks and each model's results on them."""
    tasks = build_tasks(held_out_scenes(config), shapes_config(config).max_shapes)
    images = load_test_images(paths.root, config)
    before = evaluate(ClipPipeline.from_pretrained(untrained, device="cpu"), tasks, images)
    after = evaluate(ClipPipeline.from_pretrained(trained, device="cpu"), tasks, images)
    return tasks, before, after


def task_metrics(tasks: list, before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    return {task.name: {"top1": round(after[task.name]["top1"], 2),
                        "untrained_top1": round(before[task.name]["top1"], 2),
                        "chance": round(100 * task.chance, 2), "num_labels": len(task.labels),
                        "num_images": len(task.image_indices), "template": task.template,
                        "description": task.description} for task in tasks}


def build_metrics(config: ClipDemoConfig, tasks: list, before: dict, after: dict, losses: list[dict],
                  logit_scale: float, timer: Timer, wall: float) -> dict[str, Any]:
    from dataclasses import asdict

    per_task = task_metrics(tasks, before, after)
    return {
        "family": "clip",
        "zero_shot_top1": per_task["shape"]["top1"],  # the headline: 24 classes, like an ImageNet-style label set
        "zero_shot_top1_untrained": per_task["shape"]["untrained_top1"],
        "zero_shot_chance": per_task["shape"]["chance"],
        "zero_shot": per_task,
        "first_loss": losses[0]["loss"] if losses else None,
        "final_loss": losses[-1]["loss"] if losses else None,
        "logit_scale": round(logit_scale, 3),
        "stage_seconds": {name: round(value, 1) for name, value in timer.seconds.items()},
        "wall_time_s": round(wall, 1),
        # CPU seconds of this process: on a busy machine the wall time says more about the neighbours.
        "cpu_time_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        **peak_memory_mib(),
        "config": asdict(config),
        "versions": library_versions(),
    }


def example_rows(config: ClipDemoConfig, paths: ShapesPaths, tasks: list, after: dict,
                 image_dir: Path) -> list[dict[str, Any]]:
    """The first few images of the "shape" task: the truth and the trained model's three best labels."""
    task = next(task for task in tasks if task.name == "shape")
    probabilities = after["shape"]["probabilities"]
    image_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for row, (image_index, target) in enumerate(zip(task.image_indices[:config.num_examples], task.targets)):
        source = paths.root / image_relpath("test", image_index)
        shutil.copyfile(source, image_dir / source.name)
        top = probabilities[row].topk(3)
        examples.append({"image": f"{image_dir.name}/{source.name}", "truth": task.labels[target],
                         "predictions": [(task.labels[i], round(p, 3)) for p, i in zip(top.values.tolist(),
                                                                                        top.indices.tolist())]})
    return examples


def run_clip_demo(config: ClipDemoConfig, output: Path) -> dict[str, Any]:
    """The whole workflow into `output`; returns the metrics (also in `output/metrics.json`)."""
    output.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed, config.threads)
    progress, timer, work = Progress(NUM_STEPS), Timer(), output / "work"
    progress.step(f"writing the shapes data ({config.num_train} train / {config.num_test} test images)")
    paths = timer("data", write_shapes_dataset, work / "data", shapes_config(config), True)
    untrained, trained, losses = train_clip(config, paths, work, timer, progress)
    progress.step("zero-shot classification of the held-out images, trained and untrained")
    tasks, before, after = timer("eval", zero_shot, config, paths, untrained, trained)
    progress.step("writing metrics.json and report.html")
    logit_scale = ClipPipeline.from_pretrained(trained, device="cpu").logit_scale
    metrics = build_metrics(config, tasks, before, after, losses, logit_scale, timer, progress.elapsed())
    write_json(output / "metrics.json", metrics, indent=2)
    write_clip_report(output, metrics, losses, example_rows(config, paths, tasks, after, output / "images"))
    progress.step(f"done: {output / 'report.html'}")
    return metrics


def clip_summary(metrics: dict[str, Any]) -> str:
    """Lines for the terminal: each task's top-1 against the untrained model and chance; time and memory."""
    lines = [f"zero-shot top-1 {name:<10} {row['top1']:6.2f}%   (untrained {row['untrained_top1']:.2f}%, "
             f"chance {row['chance']:.2f}%, {row['num_labels']} labels, {row['num_images']} images)"
             for name, row in metrics["zero_shot"].items()]
    lines.append(f"wall time {metrics['wall_time_s']:.1f} s (CPU {metrics['cpu_time_s']:.1f} s), "
                 f"peak memory {metrics['peak_memory_mib']:.0f} MiB")
    return "\n".join(lines)
