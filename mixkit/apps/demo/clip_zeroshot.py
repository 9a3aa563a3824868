"""Zero-shot classification of the held-out shapes images: the tasks, their true labels, and top-1 accuracy.

Every task is a set of class names put into one prompt template, as CLIP's zero-shot ImageNet evaluation does;
the prompts follow the captions' wording, but no prompt is a training caption ("there is an orange circle" is one
only for images whose only shape is an orange circle, and the model never sees the test images). Classification
is `ClipPipeline.classify` (softmax of exp(logit_scale) x cosine), the same call `mixkit predict classify` makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from mixkit.apps.demo.clip_config import ClipDemoConfig, shapes_config
from mixkit.data.shapes import (
    BACKGROUND_COLOURS, COUNT_WORDS, KINDS, SHAPE_COLOURS, Scene, image_relpath, make_example,
)
from mixkit.data.transforms import load_image
from mixkit.pipelines.clip import ClipPipeline


@dataclass(frozen=True)
class ZeroShotTask:
    name: str
    description: str
    labels: tuple[str, ...]
    template: str
    image_indices: tuple[int, ...]  # test images the task asks about
    targets: tuple[int, ...]  # index of each image's true label

    @property
    def chance(self) -> float:
        return 1.0 / len(self.labels)


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def shape_labels() -> tuple[str, ...]:
    return tuple(_with_article(f"{colour} {kind}") for colour in SHAPE_COLOURS for kind in KINDS)


def count_labels(max_shapes: int) -> tuple[str, ...]:
    return tuple(f"{COUNT_WORDS[n]} shape" + ("" if n == 1 else "s") for n in range(1, max_shapes + 1))


def build_tasks(scenes: Sequence[Scene], max_shapes: int) -> list[ZeroShotTask]:
    """Which shape (colour and kind, on the images with one shape), the background colour, how many shapes."""
    shapes, backgrounds, counts = shape_labels(), tuple(BACKGROUND_COLOURS), count_labels(max_shapes)
    single = [i for i, scene in enumerate(scenes) if len(scene.shapes) == 1]
    every = range(len(scenes))
    return [
        ZeroShotTask("shape", "colour and kind of the only shape", shapes, "there is {}", tuple(single),
                     tuple(shapes.index(_with_article(f"{scenes[i].shapes[0].colour} {scenes[i].shapes[0].kind}"))
                           for i in single)),
        ZeroShotTask("background", "background colour", backgrounds, "a {} background", tuple(every),
                     tuple(backgrounds.index(scenes[i].background) for i in every)),
        ZeroShotTask("count", "number of shapes", counts, "a background with {}", tuple(every),
                     tuple(len(scenes[i].shapes) - 1 for i in every)),
    ]


def held_out_scenes(config: ClipDemoConfig) -> list[Scene]:
    """The held-out scenes, regenerated (the files hold only their text), in image-index order."""
    return [make_example("test", i, shapes_config(config)).scene for i in range(config.num_test)]


def load_test_images(root: Path, config: ClipDemoConfig) -> list[Image.Image]:
    return [load_image(root / image_relpath("test", i)) for i in range(config.num_test)]


def task_probabilities(pipeline: ClipPipeline, task: ZeroShotTask, images: Sequence[Image.Image]) -> torch.Tensor:
    """[task images, labels]: `ClipPipeline.classify` over the task's images."""
    return pipeline.classify([images[i] for i in task.image_indices], list(task.labels), task.template,
                             batch_size=128)


def top1_accuracy(probabilities: torch.Tensor, targets: Sequence[int]) -> float:
    """Percentage of rows whose most probable label is the true one."""
    if len(targets) == 0:
        return float("nan")
    hits = probabilities.argmax(dim=1) == torch.tensor(list(targets))
    return 100.0 * hits.float().mean().item()


def evaluate(pipeline: ClipPipeline, tasks: Sequence[ZeroShotTask],
             images: Sequence[Image.Image]) -> dict[str, dict]:
    """Per task: top-1 accuracy (%) and the probabilities behind it."""
    results = {}
    for task in tasks:
        probabilities = task_probabilities(pipeline, task, images)
        results[task.name] = {"top1": top1_accuracy(probabilities, task.targets), "probabilities": probabilities}
    return results
