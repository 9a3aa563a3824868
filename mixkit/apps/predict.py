"""`mixkit predict caption|vqa`: the seed's run_predict as one command, on the pipeline layer.

Inputs are checked before the model loads (a missing, non-image or truncated file, an empty question): one
line on stderr naming the input, exit code 2. Results go to stdout (JSON with `--json`), logs to stderr.
Library use: `predict_captions(CaptionPredictConfig(...))`, `predict_answers(VqaPredictConfig(...))`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from PIL import Image

from mixkit.data.transforms import ImageLoadError, load_image
from mixkit.pipelines.options import GenerationOptions, ModelOptions
from mixkit.utils.typed_args import dataclass_from_args

USAGE_ERROR = 2


class InputError(ValueError):
    """Bad user input, reported as one line and exit code 2."""


@dataclass(kw_only=True)
class CaptionPredictConfig(GenerationOptions, ModelOptions):
    image: list[str] = field(metadata={"help": "one or more image files", "metavar": "PATH"})
    json: bool = field(default=False, metadata={"help": "print one JSON array instead of text lines"})


@dataclass(kw_only=True)
class VqaPredictConfig(CaptionPredictConfig):
    question: list[str] = field(metadata={
        "help": "the question; give one per image, or one for all images", "metavar": "TEXT"})

    def questions(self) -> list[str]:
        """One question per image (a single one is asked of every image)."""
        questions = list(self.question) * (len(self.image) if len(self.question) == 1 else 1)
        if len(questions) != len(self.image):
            raise InputError(f"--question: got {len(questions)} questions for {len(self.image)} images; "
                             "give one per image or a single one for all")
        for index, question in enumerate(questions):
            if not question.strip():
                raise InputError(f"--question {index + 1}: the question is empty")
        return questions


def load_images(paths: list[str]) -> list[Image.Image]:
    images = []
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageLoadError as error:
            raise InputError(str(error)) from None
    return images


def load_checked(config: CaptionPredictConfig):
    """Options checked, images decoded and the checkpoint found before `transformers` is even imported; then
    the pipeline and the generation settings (the checkpoint's, with the options on top)."""
    from mixkit.models.hub import resolve_checkpoint

    try:
        config.check()
    except ValueError as error:
        raise InputError(str(error)) from None
    images = load_images(config.image)
    resolve_checkpoint(config.model)
    from mixkit.pipelines.blip2 import Blip2Pipeline

    pipeline = Blip2Pipeline.from_pretrained(config.model, device=config.device, fp32=config.fp32)
    base = pipeline.settings.vqa if isinstance(config, VqaPredictConfig) else pipeline.settings.caption
    try:
        return pipeline, images, config.apply(base)
    except ValueError as error:
        raise InputError(str(error)) from None


def predict_captions(config: CaptionPredictConfig) -> list[dict[str, str]]:
    """`{"image", "caption"}` per image."""
    pipeline, images, settings = load_checked(config)
    texts = pipeline.caption(images, prompt=config.prompt, settings=settings, batch_size=config.batch_size)
    return [{"image": path, "caption": text} for path, text in zip(config.image, texts)]


def predict_answers(config: VqaPredictConfig) -> list[dict[str, str]]:
    """`{"image", "question", "answer"}` per image."""
    questions = config.questions()
    pipeline, images, settings = load_checked(config)
    texts = pipeline.answer(images, questions, settings=settings, batch_size=config.batch_size,
                            prompt_template=config.prompt)
    return [{"image": path, "question": q, "answer": a} for path, q, a in zip(config.image, questions, texts)]


TASKS = {"caption": (CaptionPredictConfig, predict_captions), "vqa": (VqaPredictConfig, predict_answers)}


def run(args: argparse.Namespace, task: str) -> int:
    config_type, predict = TASKS[task]
    try:
        records = predict(dataclass_from_args(config_type, args))
    except (InputError, FileNotFoundError, KeyError, ValueError) as error:
        print(f"mixkit predict {task}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    write_records(records, as_json=args.json)
    return 0


def write_records(records: list[dict[str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(records, ensure_ascii=False, indent=2))
        return
    for record in records:
        answer = record.get("caption", record.get("answer"))
        question = f"  Q: {record['question']}" if "question" in record else ""
        print(f"{record['image']}{question}\t{answer}")
