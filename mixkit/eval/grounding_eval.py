"""`mixkit eval grounding`: MiniGPT-v2 referring-expression grounding, RefCOCO-style accuracy.

As Vision-CAIR/MiniGPT-4 d94738a `eval_scripts/eval_ref.py` evaluates: each record's expression is asked as
"[refer] give me the location of {sents}" in the MiniGPT-v2 template (system ""), greedy, 20 new tokens
(`eval_configs/minigptv2_benchmark_evaluation.yaml`); an answer that does not start with a box
`{<x1><y1><x2><y2>}` counts as wrong; boxes are scaled from the 0-100 grid to the image's pixels and compared
with the record's box (x, y, w, h -> corners) by `computeIoU` (areas with +1); accuracy = answers with IoU
>= 0.5 / records, the usual RefCOCO rule (eval_ref.py writes `> 0.5`; the two differ only for an IoU of exactly
0.5). (The official `--resample` retries of non-box answers are not run.)

Output in `--output-dir`: `{split}_grounding_result.json` (one row per record: index, img_id, sents, answer,
box, iou, correct) and `metrics.json`; the metrics JSON also goes to stdout.
Library use: `evaluate_grounding(GroundingEvalConfig(...))`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from mixkit.data.shapes.grounding import refcoco_image_path
from mixkit.eval.command import (check_config, dataclass_from_args, generation_settings, load_model, run_evaluation,
                                 standalone_main)
from mixkit.eval.config import GroundingEvalConfig
from mixkit.eval.inputs import EvalInputError, check_images_exist, load_json_file
from mixkit.eval.reporting import format_table, run_metadata, write_outputs
from mixkit.eval.sharding import RunOptions, run_sharded
from mixkit.models.minigpt4.boxes import box_iou, parse_refer_answer
from mixkit.models.minigpt4.templates import V2_REFER_PROMPT
from mixkit.models.settings import GenerationSettings
from mixkit.utils.distributed import DistContext

RECORD_KEYS = ("img_id", "sents", "bbox", "height", "width")


def check_records(records: object, source: str) -> list[dict]:
    """The official record layout, or an EvalInputError naming the record and field."""
    if not isinstance(records, list) or not records:
        raise EvalInputError(f"{source}: expected a non-empty list of RefCOCO records")
    for index, record in enumerate(records):
        missing = [key for key in RECORD_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise EvalInputError(f"{source}: record {index} lacks {missing}")
        if len(record["bbox"]) != 4 or record["width"] <= 0 or record["height"] <= 0:
            raise EvalInputError(f"{source}: record {index} needs bbox [x, y, w, h] and a positive width/height")
    return records


def score_answer(answer: str, record: dict, threshold: float) -> dict:
    """The parsed pixel box, its IoU with the record's box and whether it counts (eval_ref.py's rule)."""
    box = parse_refer_answer(answer, record["width"], record["height"])
    x, y, w, h = record["bbox"]
    iou = None if box is None else box_iou(box, (x, y, x + w, y + h))
    return {"box": None if box is None else [round(v, 2) for v in box], "iou": iou,
            "correct": iou is not None and iou >= threshold}


@dataclass
class GroundingBatch:
    pipeline: object
    settings: GenerationSettings
    template: str
    config: GroundingEvalConfig

    def __call__(self, units: Sequence[tuple[int, dict]]) -> list[dict]:
        images = [refcoco_image_path(self.config.image_root, record["img_id"]) for _, record in units]
        answers = self.pipeline.ground(images, [record["sents"] for _, record in units], self.settings,
                                       batch_size=len(units), prompt_template=self.template)
        return [{"index": index, "img_id": record["img_id"], "sents": record["sents"], "answer": answer,
                 **score_answer(answer, record, self.config.iou_threshold)}
                for (index, record), answer in zip(units, answers)]


def accuracy(results: Sequence[dict]) -> float:
    return 100.0 * sum(row["correct"] for row in results) / len(results)


def score_table(metrics: dict) -> str:
    rows = [("expressions", metrics["num_records"]),
            (f"accuracy (IoU >= {metrics['iou_threshold']})", metrics["accuracy"]),
            ("answers with a box", metrics["num_with_box"])]
    return format_table(rows, f"grounding {metrics['split']}: {metrics['model']}")


def evaluate_grounding(config: GroundingEvalConfig, ctx: DistContext | None = None) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    from mixkit.pipelines.auto import load_pipeline

    ctx = ctx or DistContext()
    check_config(config)
    records = check_records(load_json_file(config.annotations, "--annotations"), str(config.annotations))
    check_images_exist(sorted({refcoco_image_path(config.image_root, r["img_id"]) for r in records}))
    pipeline = load_model(lambda: load_pipeline(config.model, task="grounding", device=ctx.device(config.device),
                                                fp32=config.fp32), config.model)
    template = V2_REFER_PROMPT if config.prompt is None else config.prompt
    if "{}" not in template:
        raise EvalInputError(f"--prompt {template!r}: a grounding prompt needs a {{}} for the expression")
    batch = GroundingBatch(pipeline, generation_settings(config, pipeline.settings.vqa), template, config)
    options = RunOptions(config.output_dir, "index", config.batch_size, config.save_every, config.resume)
    results = run_sharded(list(enumerate(records)), lambda unit: [unit[0]], batch, options, ctx)
    if results is None:
        return None
    metrics = {"task": "grounding", "split": config.split, "model": config.model, "num_records": len(results),
               "accuracy": accuracy(results), "num_with_box": sum(row["box"] is not None for row in results),
               "iou_threshold": config.iou_threshold, "prompt_template": template,
               **run_metadata(batch.settings, config.batch_size, ctx)}
    return write_outputs(config.output_dir, f"{config.split}_grounding_result.json", results, metrics)


def run(args: argparse.Namespace) -> int:
    """`mixkit eval grounding`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return run_evaluation("grounding", evaluate_grounding, dataclass_from_args(GroundingEvalConfig, args),
                          score_table)


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main(GroundingEvalConfig, run, "grounding", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
