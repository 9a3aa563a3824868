"""`mixkit predict caption|vqa`: the seed's run_predict as one command.

Inputs are checked before the model loads (a missing, non-image or truncated file, an empty question): one
line on stderr naming the input, exit code 2. Results go to stdout (JSON with `--json`), logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from PIL import Image

from mixkit.data.transforms import ImageLoadError, load_image

USAGE_ERROR = 2


class InputError(ValueError):
    """Bad user input, reported as one line and exit code 2."""


def add_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument("--model", required=True,
                        help="catalogue name (see `mixkit models`) or a checkpoint folder "
                             "(mixkit- or transformers-saved: config.json + model.safetensors + tokenizer)")
    parser.add_argument("--image", nargs="+", required=True, metavar="PATH", help="one or more image files")
    if task == "vqa":
        parser.add_argument("--question", nargs="+", required=True, metavar="TEXT",
                            help="the question; give one per image, or one for all images")
    parser.add_argument("--prompt", default=None,
                        help="caption: text the caption continues (default: the checkpoint's own, e.g. 'a photo "
                             "of' for caption-finetuned models); vqa: template with {} for the question "
                             "(default 'Question: {} Short answer:')")
    parser.add_argument("--num-beams", type=int, default=None, help="beam width (default: the reference's, 5)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="most tokens to generate (default: reference, 29/30 captions, 10 answers)")
    parser.add_argument("--min-new-tokens", type=int, default=None,
                        help="fewest tokens to generate (default: reference, 7 captions, 0 answers)")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="beam length penalty (default: reference; VQA 0 for OPT, -1 for Flan-T5)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--fp32", action="store_true",
                        help="keep the frozen ViT and LLM in fp32 on GPU (default there: bf16, or fp16)")
    parser.add_argument("--json", action="store_true", help="print one JSON array instead of text lines")


def load_images(paths: list[str]) -> list[Image.Image]:
    images = []
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageLoadError as error:
            raise InputError(str(error)) from None
    return images


def questions_for(args: argparse.Namespace) -> list[str]:
    questions = list(args.question)
    if len(questions) == 1:
        questions *= len(args.image)
    if len(questions) != len(args.image):
        raise InputError(f"--question: got {len(questions)} questions for {len(args.image)} images; "
                         "give one per image or a single one for all")
    for index, question in enumerate(questions):
        if not question.strip():
            raise InputError(f"--question {index + 1}: the question is empty")
    return questions


def check_numbers(args: argparse.Namespace) -> None:
    for name in ("num_beams", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    if args.min_new_tokens is not None and args.min_new_tokens < 0:
        raise InputError(f"--min-new-tokens: must be >= 0, got {args.min_new_tokens}")


def override_settings(base, args: argparse.Namespace):
    from mixkit.apps.predictor import settings_with_overrides

    try:
        return settings_with_overrides(base, args.num_beams, args.max_new_tokens, args.min_new_tokens,
                                       args.length_penalty)
    except ValueError as error:
        raise InputError(str(error)) from None


def run(args: argparse.Namespace, task: str) -> int:
    from mixkit.models.hub import resolve_checkpoint

    try:
        check_numbers(args)
        images = load_images(args.image)
        questions = questions_for(args) if task == "vqa" else []
        resolve_checkpoint(args.model)  # fail fast (missing weights) before transformers is even imported
        from mixkit.apps.predictor import Blip2Predictor

        predictor = Blip2Predictor.from_pretrained(args.model, device=args.device, fp32=args.fp32)
        settings = override_settings(predictor.settings.caption if task == "caption" else predictor.settings.vqa, args)
    except (InputError, FileNotFoundError, KeyError, ValueError) as error:
        print(f"mixkit predict {task}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    if task == "caption":
        texts = predictor.caption(images, prompt=args.prompt, settings=settings, batch_size=args.batch_size)
        records = [{"image": path, "caption": text} for path, text in zip(args.image, texts)]
    else:
        texts = predictor.answer(images, questions, settings=settings, batch_size=args.batch_size,
                                 prompt_template=args.prompt)
        records = [{"image": path, "question": q, "answer": a} for path, q, a in zip(args.image, questions, texts)]
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
