"""`mixkit eval vqa`: answer every question of an official VQAv2 questions file, then score it.

Questions are grouped by image, so each image goes through the image encoder once however many
questions it has (VQAv2 has ~5 per image); the answers are generated from the cached encoder
output. Output, in `--output-dir`:

  {split}_vqa_result.json   [{"question_id": int, "answer": str}], sorted by question id: the
                            file the VQAv2 evaluation server takes (test-dev has no annotations)
  metrics.json              the VQA scores (with --annotations), the settings, prompts, versions

The metrics JSON also goes to stdout; logs, the progress bar and a short table to stderr.
Run under `torchrun --nproc_per_node N -m mixkit.eval.vqa_eval ...` to shard over N processes.
Library use: `evaluate_vqa(VqaEvalConfig(...))`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mixkit.eval import result_files as rf
from mixkit.eval.command import (check_config, dataclass_from_args, generation_settings, load_model, run_evaluation,
                                 standalone_main)
from mixkit.eval.config import VqaEvalConfig
from mixkit.eval.inputs import EvalInputError, check_images_exist, load_json_file
from mixkit.eval.reporting import format_table, run_metadata, write_outputs
from mixkit.eval.sharding import RunOptions, run_sharded
from mixkit.eval.vqa_score import score_validated_vqa
from mixkit.models.settings import GenerationSettings
from mixkit.utils.distributed import DistContext

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
    """Answers a batch of images' questions through the pipeline: each image encoded once."""

    def __init__(self, pipeline, settings: GenerationSettings, template: str, question_batch: int):
        self.pipeline, self.settings, self.template = pipeline, settings, template
        self.question_batch = question_batch

    def __call__(self, units: Sequence[ImageQuestions]) -> list[dict]:
        answers = self.pipeline.answer_grouped(
            [unit.path for unit in units], [[q for _, q in unit.questions] for unit in units],
            self.settings, question_batch=self.question_batch, prompt_template=self.template)
        return [{"question_id": qid, "answer": answer}
                for unit, unit_answers in zip(units, answers) for (qid, _), answer in zip(unit.questions, unit_answers)]


@dataclass(frozen=True)
class VqaInputs:
    questions: dict  # question_id -> record
    truth: dict | None  # question_id -> annotation, validated and matched to the questions
    units: list[ImageQuestions]


def load_inputs(config: VqaEvalConfig) -> VqaInputs:
    """Everything checked once, before the model loads: files, records, image paths."""
    questions = rf.validate_vqa_questions(load_json_file(config.questions, "--questions"), str(config.questions))
    truth = None
    if config.annotations is not None:
        annotations = load_json_file(config.annotations, "--annotations")
        truth = rf.validate_vqa_annotations(annotations, str(config.annotations))
        rf.check_questions_match(questions, truth, str(config.questions))
    units = group_by_image(questions, config.image_root, config.image_pattern)
    check_images_exist([unit.path for unit in units])
    return VqaInputs(questions, truth, units)


def build_metrics(config: VqaEvalConfig, inputs: VqaInputs, results: list[dict], batch: VqaBatch,
                  ctx: DistContext) -> dict:
    scores = None if inputs.truth is None else score_validated_vqa(inputs.truth, results).to_json()
    first = list(inputs.questions.values())[:PROMPTS_LOGGED]
    return {
        "task": "vqa",
        "split": config.split,
        "model": config.model,
        "scores": scores,
        "num_questions": len(results),
        "num_images": len(inputs.units),
        "prompt_template": batch.template,
        "prompts": [batch.pipeline.vqa_prompt(record["question"], batch.template) for record in first],
        **run_metadata(batch.settings, config.batch_size, ctx),
    }


def score_table(metrics: dict) -> str:
    scores = metrics["scores"]
    rows: list[tuple[str, object]] = [("questions", metrics["num_questions"])]
    if scores is None:
        rows.append(("accuracy", "no annotations"))
    else:
        rows.append(("overall", scores["overall"]))
        rows += [(f"  {name}", value) for name, value in sorted(scores["perAnswerType"].items())]
    return format_table(rows, f"VQA {metrics['split']}: {metrics['model']}")


def evaluate_vqa(config: VqaEvalConfig, ctx: DistContext | None = None) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    from mixkit.pipelines.auto import load_pipeline

    ctx = ctx or DistContext()
    check_config(config)
    inputs = load_inputs(config)
    pipeline = load_model(lambda: load_pipeline(config.model, task="vqa", device=ctx.device(config.device),
                                                          fp32=config.fp32), config.model)
    template = pipeline.settings.vqa_prompt if config.prompt is None else config.prompt
    if "{}" not in template:
        raise EvalInputError(f"--prompt {template!r}: a VQA prompt needs a {{}} for the question")
    settings = generation_settings(config, pipeline.settings.vqa)
    batch = VqaBatch(pipeline, settings, template, config.batch_size)
    options = RunOptions(config.output_dir, "question_id", config.batch_size, config.save_every, config.resume)
    unit_ids = lambda unit: [qid for qid, _ in unit.questions]  # noqa: E731
    results = run_sharded(inputs.units, unit_ids, batch, options, ctx, restrict=unanswered)
    if results is None:
        return None
    metrics = build_metrics(config, inputs, results, batch, ctx)
    return write_outputs(config.output_dir, f"{config.split}_vqa_result.json", results, metrics)


def run(args: argparse.Namespace) -> int:
    """`mixkit eval vqa`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return run_evaluation("vqa", evaluate_vqa, dataclass_from_args(VqaEvalConfig, args), score_table)


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main(VqaEvalConfig, run, "vqa", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
