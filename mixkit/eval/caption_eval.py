"""`mixkit eval caption`: caption every image of a COCO-Karpathy-style test file, then score it.

Records are LAVIS's `coco_karpathy_test.json` format, `[{"image": path, "caption": [refs],
"image_id"?: int}]` (also what `mixkit.data.shapes` writes as `caption_test.json`); an image path
is relative to `--image-root`. Image ids follow LAVIS's rule (`mixkit.data.records.lavis_image_id`:
without "image_id", the last "_" field of the file name, `COCO_val2014_000000391895.jpg` -> 391895).
Output, in `--output-dir`:

  {split}_caption_result.json   [{"image_id": int, "caption": str}], sorted by image id
  metrics.json                  COCO caption scores (with --gt), settings, prompt, versions

Defaults are the checkpoint's: its caption prompt ("a photo of" for caption-finetuned ones) and
the reference settings (beams 5, at most 29 new tokens for OPT / 30 for T5, at least 7).
Library use: `evaluate_caption(CaptionEvalConfig(...))`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixkit.eval.caption_score import CaptionScoreError, check_environment, score_captions
from mixkit.eval.command import (check_config, dataclass_from_args, generation_settings, load_model, run_evaluation,
                                 standalone_main)
from mixkit.eval.config import CaptionEvalConfig
from mixkit.eval.inputs import EvalInputError, check_images_exist, load_json_file, record_image_id
from mixkit.eval.reporting import format_table, run_metadata, write_outputs
from mixkit.eval.sharding import RunOptions, run_sharded
from mixkit.models.settings import GenerationSettings
from mixkit.utils.distributed import DistContext

SCORE_ORDER = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")


@dataclass(frozen=True)
class CaptionImage:
    """One work unit: an image to caption."""

    image_id: Hashable
    path: Path


def parse_records(data: object, image_root: Path, source: str) -> list[CaptionImage]:
    """Units in file order, one per image id (Karpathy files list each image once; be safe anyway)."""
    if not isinstance(data, list):
        raise EvalInputError(f"{source}: expected a list of {{'image', 'caption'}} records")
    units: dict[Hashable, CaptionImage] = {}
    for index, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise EvalInputError(f"{source}: record {index}: needs an 'image' path (a string)")
        image_id = record_image_id(record, index, source)
        units.setdefault(image_id, CaptionImage(image_id, Path(image_root) / record["image"]))
    return list(units.values())


class CaptionBatch:
    """Captions a batch of images with one prompt, through the pipeline."""

    def __init__(self, pipeline, settings: GenerationSettings, prompt: str):
        self.pipeline, self.settings, self.prompt = pipeline, settings, prompt

    def __call__(self, units: Sequence[CaptionImage]) -> list[dict]:
        captions = self.pipeline.caption([unit.path for unit in units], self.prompt, self.settings,
                                         batch_size=len(units))
        return [{"image_id": unit.image_id, "caption": c} for unit, c in zip(units, captions)]


def load_inputs(config: CaptionEvalConfig) -> tuple[list[CaptionImage], dict | None]:
    """Records, image files and the scorer's environment, all checked before the model loads."""
    units = parse_records(load_json_file(config.records, "--records"), config.image_root, str(config.records))
    check_images_exist([unit.path for unit in units])
    gt = None
    if config.gt is not None:
        check_environment()  # no Java: fail now, not after an hour of generation
        gt = load_json_file(config.gt, "--gt")
    return units, gt


def build_metrics(config: CaptionEvalConfig, units: list[CaptionImage], gt: dict | None, results: list[dict],
                  batch: CaptionBatch, ctx: DistContext) -> dict:
    scores = score_captions(gt, results, spice=config.spice) if gt is not None else None
    return {
        "task": "caption",
        "split": config.split,
        "model": config.model,
        "scores": scores,
        "num_images": len(results),
        "prompt": batch.prompt,
        "prompts": [batch.prompt] * min(len(units), 3),
        **run_metadata(batch.settings, config.batch_size, ctx),
    }


def score_table(metrics: dict) -> str:
    scores = metrics["scores"]
    rows: list[tuple[str, object]] = [("images", metrics["num_images"])]
    if scores is None:
        rows.append(("scores", "no --gt"))
    else:
        # Percentages, as papers and LAVIS logs print them.
        rows += [(name, 100 * scores[name]) for name in SCORE_ORDER if scores.get(name) is not None]
    return format_table(rows, f"Captions {metrics['split']}: {metrics['model']}")


def evaluate_caption(config: CaptionEvalConfig, ctx: DistContext | None = None) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    from mixkit.pipelines.auto import load_pipeline

    ctx = ctx or DistContext()
    check_config(config)
    units, gt = load_inputs(config)
    pipeline = load_model(lambda: load_pipeline(config.model, task="caption", device=ctx.device(config.device),
                                                          fp32=config.fp32), config.model)
    prompt = pipeline.settings.prompt if config.prompt is None else config.prompt
    batch = CaptionBatch(pipeline, generation_settings(config, pipeline.settings.caption), prompt)
    options = RunOptions(config.output_dir, "image_id", config.batch_size, config.save_every, config.resume)
    results = run_sharded(units, lambda unit: [unit.image_id], batch, options, ctx)
    if results is None:
        return None
    metrics = build_metrics(config, units, gt, results, batch, ctx)
    return write_outputs(config.output_dir, f"{config.split}_caption_result.json", results, metrics)


def run(args: argparse.Namespace) -> int:
    """`mixkit eval caption`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return run_evaluation("caption", evaluate_caption, dataclass_from_args(CaptionEvalConfig, args), score_table,
                          (CaptionScoreError,))


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main(CaptionEvalConfig, run, "caption", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
