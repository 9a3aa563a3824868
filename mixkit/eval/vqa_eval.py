"""`mixkit eval vqa`: answer every question of an official VQAv2 questions file, then score it.

Questions are grouped by image, so each image goes through the image encoder once however many
questions it has (VQAv2 has ~5 per image); the answers are generated from the cached encoder
output. Output, in `--output-dir`:

  {split}_vqa_result.json   [{"question_id": int, "answer": str}], sorted by question id: the
                            file the VQAv2 evaluation server takes (test-dev has no annotations)
  metrics.json              the VQA scores (with --annotations), the settings, prompts, versions

The metrics JSON also goes to stdout; logs, the progress bar and a short table to stderr.
Run under `torchrun --nproc_per_node N -m mixkit.eval.vqa_eval ...` to shard over N processes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mixkit.data.text import clean_question
from mixkit.eval import result_files as rf
from mixkit.eval import runner
from mixkit.eval.runner import DistContext, EvalInputError
from mixkit.eval.vqa_score import score_vqa

COCO_IMAGE_PATTERN = "val2014/COCO_val2014_{image_id:012d}.jpg"
PROMPTS_LOGGED = 3


@dataclass(frozen=True)
class ImageQuestions:
    """One work unit: an image and every question asked about it, as (question_id, question)."""

    image_id: Hashable
    path: Path
    questions: tuple[tuple[Hashable, str], ...]


def image_path(image_root: Path, pattern: str, image_id: Hashable) -> Path:
    try:
        return Path(image_root) / pattern.format(image_id=image_id)
    except (ValueError, KeyError, IndexError) as error:
        raise EvalInputError(f"--image-pattern {pattern!r} does not fit image_id {image_id!r}: {error}") from None


def group_by_image(questions: dict, image_root: Path, pattern: str) -> list[ImageQuestions]:
    """Work units in the file's order of first appearance of each image."""
    grouped: dict[Hashable, list[tuple[Hashable, str]]] = {}
    for qid, record in questions.items():
        grouped.setdefault(record["image_id"], []).append((qid, record["question"]))
    return [ImageQuestions(i, image_path(image_root, pattern, i), tuple(qs)) for i, qs in grouped.items()]


def unanswered(unit: ImageQuestions, done: set[Hashable]) -> ImageQuestions:
    return replace(unit, questions=tuple(q for q in unit.questions if q[0] not in done))


class VqaBatch:
    """Answers a batch of images' questions: encode the images once, then generate per question chunk."""

    def __init__(self, predictor, settings, template: str, question_batch: int):
        self.predictor, self.settings, self.template = predictor, settings, template
        self.question_batch = question_batch

    def prompt(self, question: str) -> str:
        return self.template.format(clean_question(question))

    @torch.no_grad()
    def __call__(self, units: Sequence[ImageQuestions]) -> list[dict]:
        embeds = runner.encode_images(self.predictor, [unit.path for unit in units])
        rows = [(row, qid, self.prompt(q)) for row, unit in enumerate(units) for qid, q in unit.questions]
        records = []
        for chunk in runner.chunks(rows, self.question_batch):
            index = torch.tensor([row for row, _, _ in chunk], device=embeds.device)
            answers = runner.generate_texts(
                self.predictor, embeds.index_select(0, index), [p for _, _, p in chunk], self.settings
            )
            records += [{"question_id": qid, "answer": a} for (_, qid, _), a in zip(chunk, answers)]
        return records


@dataclass(frozen=True)
class VqaInputs:
    questions_json: dict
    questions: dict  # question_id -> record
    annotations_json: dict | None
    units: list[ImageQuestions]


def load_inputs(args: argparse.Namespace) -> VqaInputs:
    """Everything checked before the model loads: files, records, image paths."""
    questions_json = runner.load_json_file(args.questions, "--questions")
    questions = rf.validate_vqa_questions(questions_json, str(args.questions))
    annotations_json = None
    if args.annotations is not None:
        annotations_json = runner.load_json_file(args.annotations, "--annotations")
        truth = rf.validate_vqa_annotations(annotations_json, str(args.annotations))
        rf.check_questions_match(questions, truth, str(args.questions))
    units = group_by_image(questions, args.image_root, args.image_pattern)
    runner.check_images_exist([unit.path for unit in units])
    return VqaInputs(questions_json, questions, annotations_json, units)


def build_metrics(args, inputs: VqaInputs, results: list[dict], batch: VqaBatch, ctx: DistContext) -> dict:
    scores = None
    if inputs.annotations_json is not None:
        scores = score_vqa(inputs.questions_json, inputs.annotations_json, results).to_json()
    first = list(inputs.questions.values())[:PROMPTS_LOGGED]
    return {
        "task": "vqa",
        "split": args.split,
        "model": args.model,
        "scores": scores,
        "num_questions": len(results),
        "num_images": len(inputs.units),
        "prompt_template": batch.template,
        "prompts": [batch.prompt(record["question"]) for record in first],
        **runner.run_metadata(args, ctx, batch.settings),
    }


def score_table(metrics: dict) -> str:
    scores = metrics["scores"]
    rows: list[tuple[str, object]] = [("questions", metrics["num_questions"])]
    if scores is None:
        rows.append(("accuracy", "no annotations"))
    else:
        rows.append(("overall", scores["overall"]))
        rows += [(f"  {name}", value) for name, value in sorted(scores["perAnswerType"].items())]
    return runner.format_table(rows, f"VQA {metrics['split']}: {metrics['model']}")


def evaluate(args: argparse.Namespace, ctx: DistContext) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    runner.check_positive(args)
    inputs = load_inputs(args)
    predictor = runner.load_predictor(args, ctx)
    template = predictor.settings.vqa_prompt if args.prompt is None else args.prompt
    if "{}" not in template:
        raise EvalInputError(f"--prompt {template!r}: a VQA prompt needs a {{}} for the question")
    settings = runner.override_settings(predictor.settings.vqa, args)
    batch = VqaBatch(predictor, settings, template, args.batch_size)
    options = runner.RunOptions(args.output_dir, "question_id", args.batch_size, args.save_every, args.resume)
    unit_ids = lambda unit: [qid for qid, _ in unit.questions]  # noqa: E731
    results = runner.run_sharded(inputs.units, unit_ids, batch, options, ctx, restrict=unanswered)
    if results is None:
        return None
    runner.write_json(Path(args.output_dir) / f"{args.split}_vqa_result.json", results)
    metrics = build_metrics(args, inputs, results, batch, ctx)
    runner.write_json(Path(args.output_dir) / "metrics.json", metrics)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mixkit eval vqa`."""
    parser.add_argument("--questions", required=True, type=Path, help="official VQAv2 questions JSON")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="official VQAv2 annotations JSON, for scoring (none for test-dev)")
    parser.add_argument("--image-root", required=True, type=Path, help="folder the --image-pattern is relative to")
    parser.add_argument("--image-pattern", default=COCO_IMAGE_PATTERN,
                        help=f"image file of an image_id, a str.format pattern (default {COCO_IMAGE_PATTERN!r})")
    parser.add_argument("--split", default="val", help="names the result file {split}_vqa_result.json (default val)")
    runner.add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """`mixkit eval vqa`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return runner.run_evaluation("vqa", evaluate, score_table, args, ())


def main(argv: Sequence[str] | None = None) -> int:
    return runner.standalone_main("vqa", add_arguments, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
