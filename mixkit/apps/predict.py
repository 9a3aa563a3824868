"""`mixkit predict caption|vqa|classify`: the seed's run_predict as one command, on the pipeline layer.

Inputs are checked before the model loads (a missing, non-image or truncated file, an empty question): one
line on stderr naming the input, exit code 2. Results go to stdout (JSON with `--json`), logs to stderr.
Library use: `predict_captions(CaptionPredictConfig(...))`, `predict_answers(VqaPredictConfig(...))`,
`predict_classify(ClassifyPredictConfig(...))` (CLIP, or a BLIP-2 stage-1 checkpoint's ITC); the configs
live in `mixkit.apps.predict_config` (light, for the parser) and are importable from here too.
"""

from __future__ import annotations

import argparse
import json
import sys

from PIL import Image

from mixkit.apps.predict_config import (CaptionPredictConfig, ChatPredictConfig, ClassifyPredictConfig, InputError,
                                       MatchPredictConfig, VqaPredictConfig)
from mixkit.data.transforms import ImageLoadError, load_image
from mixkit.utils.console import library_output_to_stderr
from mixkit.utils.typed_args import dataclass_from_args

USAGE_ERROR = 2


def load_images(paths: list[str]) -> list[Image.Image]:
    """Each file decoded once, however often it is named; a bad file is an `InputError` naming it."""
    decoded: dict[str, Image.Image] = {}
    for path in paths:
        if path not in decoded:
            try:
                decoded[path] = load_image(path)
            except ImageLoadError as error:
                raise InputError(str(error)) from None
    return [decoded[path] for path in paths]


def load_checked(config: CaptionPredictConfig):
    """Options checked, images decoded and the checkpoint found before `transformers` is even imported; then
    the pipeline and the generation settings (the checkpoint's, with the options on top)."""
    from mixkit.models.hub import resolve_checkpoint

    try:
        config.check()
    except ValueError as error:
        raise InputError(str(error)) from None
    images = load_images(config.pairs()[0] if isinstance(config, VqaPredictConfig) else config.image)
    resolve_checkpoint(config.model)
    from mixkit.pipelines.auto import load_pipeline

    task = "vqa" if isinstance(config, VqaPredictConfig) else "caption"
    pipeline = load_pipeline(config.model, task=task, device=config.device, fp32=config.fp32)
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
    """`{"image", "question", "answer"}` per (image, question) pair, in the order given."""
    paths, questions = config.pairs()
    answer_list = read_answer_list(config.answers) if config.answers else None
    pipeline, images, settings = load_checked(config)
    groups = group_by_image(paths)
    if answer_list is not None:
        if not hasattr(pipeline, "rank_answers"):
            raise InputError(f"--answers: {config.model} ({pipeline.family}) generates answers; only BLIP ranks a list")
        grouped = pipeline.rank_answers([images[rows[0]] for rows in groups],
                                        [[questions[i] for i in rows] for rows in groups], answer_list,
                                        question_batch=config.batch_size, image_batch=config.batch_size)
    else:
        grouped = pipeline.answer_grouped([images[rows[0]] for rows in groups], [[questions[i] for i in rows]
                                          for rows in groups], settings, question_batch=config.batch_size,
                                          prompt_template=config.prompt, image_batch=config.batch_size)
    answers = {row: answer for rows, group in zip(groups, grouped) for row, answer in zip(rows, group)}
    return [{"image": path, "question": q, "answer": answers[row]}
            for row, (path, q) in enumerate(zip(paths, questions))]


def read_answer_list(path: str) -> list[str]:
    """`--answers FILE`: a JSON list of strings (LAVIS's answer_list.json), or one answer per line."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise InputError(f"--answers: {file} is not a file")
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".json":
        try:
            answers = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"--answers: {file} is not valid JSON: {error}") from None
        if not isinstance(answers, list) or not all(isinstance(answer, str) for answer in answers):
            raise InputError(f"--answers: {file} must hold a JSON list of strings")
    else:
        answers = [line.strip() for line in text.splitlines() if line.strip()]
    if not answers or any(not answer.strip() for answer in answers):
        raise InputError(f"--answers: {file} holds no answers (or a blank one)")
    return answers


def group_by_image(paths: list[str]) -> list[list[int]]:
    """Row numbers per distinct image file, in first-seen order: each file is encoded once for all its
    questions."""
    rows: dict[str, list[int]] = {}
    for row, path in enumerate(paths):
        rows.setdefault(path, []).append(row)
    return list(rows.values())


def predict_classify(config: ClassifyPredictConfig) -> list[dict]:
    """`{"image", "labels", "probs"}` per image, probabilities in label order (softmax of the model's scaled
    image-text similarities: CLIP's logits, or a BLIP-2 stage-1 checkpoint's ITC logits)."""
    from mixkit.models.hub import resolve_checkpoint

    config.check()
    images = load_images(config.image)
    resolve_checkpoint(config.model)
    from mixkit.pipelines.auto import load_pipeline

    pipeline = load_pipeline(config.model, task="classify", device=config.device)
    labels = config.label_list()
    probs = pipeline.classify(images, labels, template=config.template, batch_size=config.batch_size)
    return [{"image": path, "labels": labels, "probs": row} for path, row in zip(config.image, probs.tolist())]


def predict_match(config: MatchPredictConfig) -> list[dict]:
    """`{"image", "text", "itm"?, "itc"}` per (image, text) pair: the ITM match probability (BLIP, BLIP-2 stage 1)
    and the ITC cosine (every family with ITC)."""
    from mixkit.models.hub import resolve_checkpoint

    paths, texts = config.pairs()
    images = load_images(paths)
    resolve_checkpoint(config.model)
    from mixkit.pipelines.auto import load_pipeline

    scores = load_pipeline(config.model, task="match", device=config.device).match(images, texts)
    return [{"image": path, "text": text, **{name: values[row] for name, values in scores.items()}}
            for row, (path, text) in enumerate(zip(paths, texts))]


def predict_chat(config: ChatPredictConfig) -> list[dict[str, str]]:
    """`{"image", "prompt", "response"}` per image, from any chat pipeline (see `mixkit.apps.chat`)."""
    from mixkit.apps.chat import predict_chat as respond_to_instruction

    return respond_to_instruction(config)


TASKS = {"caption": (CaptionPredictConfig, predict_captions), "vqa": (VqaPredictConfig, predict_answers),
         "classify": (ClassifyPredictConfig, predict_classify), "match": (MatchPredictConfig, predict_match),
         "chat": (ChatPredictConfig, predict_chat)}


def run(args: argparse.Namespace, task: str) -> int:
    config_type, predict = TASKS[task]
    try:
        with library_output_to_stderr():
            records = predict(dataclass_from_args(config_type, args))
    except (InputError, FileNotFoundError, KeyError, ValueError) as error:
        print(f"mixkit predict {task}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    write_records(records, as_json=args.json)
    return 0


def write_records(records: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(records, ensure_ascii=False, indent=2))
        return
    for record in records:
        if "probs" in record:  # classify: the best label and its probability
            best = max(range(len(record["probs"])), key=record["probs"].__getitem__)
            print(f"{record['image']}\t{record['labels'][best]}\t{record['probs'][best]:.4f}")
            continue
        if "text" in record:  # match: the scores the model has
            scores = "\t".join(f"{name}={record[name]:.4f}" for name in ("itm", "itc") if name in record)
            print(f"{record['image']}\t{record['text']}\t{scores}")
            continue
        if "response" in record:  # chat
            print(f"{record['image']}\t{record['response']}")
            continue
        answer = record.get("caption", record.get("answer"))
        question = f"  Q: {record['question']}" if "question" in record else ""
        print(f"{record['image']}{question}\t{answer}")
