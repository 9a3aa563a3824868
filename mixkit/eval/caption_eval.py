"""`mixkit eval caption`: caption every image of a COCO-Karpathy-style test file, then score it.

Records are LAVIS's `coco_karpathy_test.json` format, `[{"image": path, "caption": [refs],
"image_id"?: int}]` (also what `mixkit.data.shapes` writes as `caption_test.json`); an image path
is relative to `--image-root`. Without "image_id" the id is the last "_" field of the file name,
LAVIS's rule (`COCO_val2014_000000391895.jpg` -> 391895). Output, in `--output-dir`:

  {split}_caption_result.json   [{"image_id": int, "caption": str}], sorted by image id
  metrics.json                  COCO caption scores (with --gt), settings, prompt, versions

Defaults are the checkpoint's: its caption prompt ("a photo of" for caption-finetuned ones) and
the reference settings (beams 5, at most 29 new tokens for OPT / 30 for T5, at least 7).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mixkit.eval import runner
from mixkit.eval.caption_score import CaptionScoreError, check_environment, score_captions
from mixkit.eval.runner import DistContext, EvalInputError

SCORE_ORDER = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")


@dataclass(frozen=True)
class CaptionImage:
    """One work unit: an image to caption."""

    image_id: Hashable
    path: Path


def image_id_of(record: dict, index: int) -> Hashable:
    if "image_id" in record:
        return record["image_id"]
    field = Path(record["image"]).stem.split("_")[-1]
    if not field.isdigit():
        raise EvalInputError(f"record {index}: no image_id, and {record['image']!r} does not end in _<number>")
    return int(field)


def parse_records(data: object, image_root: Path, source: str) -> list[CaptionImage]:
    """Units in file order, one per image id (Karpathy files list each image once; be safe anyway)."""
    if not isinstance(data, list):
        raise EvalInputError(f"{source}: expected a list of {{'image', 'caption'}} records")
    units: dict[Hashable, CaptionImage] = {}
    for index, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise EvalInputError(f"{source}: record {index}: needs an 'image' path (a string)")
        image_id = image_id_of(record, index)
        units.setdefault(image_id, CaptionImage(image_id, Path(image_root) / record["image"]))
    return list(units.values())


class CaptionBatch:
    """Captions a batch of images with one prompt."""

    def __init__(self, predictor, settings, prompt: str):
        self.predictor, self.settings, self.prompt = predictor, settings, prompt

    @torch.no_grad()
    def __call__(self, units: Sequence[CaptionImage]) -> list[dict]:
        embeds = runner.encode_images(self.predictor, [unit.path for unit in units])
        captions = runner.generate_texts(self.predictor, embeds, [self.prompt] * len(units), self.settings)
        return [{"image_id": unit.image_id, "caption": c} for unit, c in zip(units, captions)]


def load_inputs(args: argparse.Namespace) -> tuple[list[CaptionImage], dict | None]:
    """Records, image files and the scorer's environment, all checked before the model loads."""
    units = parse_records(runner.load_json_file(args.records, "--records"), args.image_root, str(args.records))
    runner.check_images_exist([unit.path for unit in units])
    gt = None
    if args.gt is not None:
        check_environment()  # no Java: fail now, not after an hour of generation
        gt = runner.load_json_file(args.gt, "--gt")
    return units, gt


def build_metrics(args, units: list[CaptionImage], gt, results: list[dict], batch: CaptionBatch, ctx) -> dict:
    scores = score_captions(gt, results, spice=args.spice) if gt is not None else None
    return {
        "task": "caption",
        "split": args.split,
        "model": args.model,
        "scores": scores,
        "num_images": len(results),
        "prompt": batch.prompt,
        "prompts": [batch.prompt] * min(len(units), 3),
        **runner.run_metadata(args, ctx, batch.settings),
    }


def score_table(metrics: dict) -> str:
    scores = metrics["scores"]
    rows: list[tuple[str, object]] = [("images", metrics["num_images"])]
    if scores is None:
        rows.append(("scores", "no --gt"))
    else:
        # Percentages, as papers and LAVIS logs print them.
        rows += [(name, 100 * scores[name]) for name in SCORE_ORDER if scores.get(name) is not None]
    return runner.format_table(rows, f"Captions {metrics['split']}: {metrics['model']}")


def evaluate(args: argparse.Namespace, ctx: DistContext) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    runner.check_positive(args)
    units, gt = load_inputs(args)
    predictor = runner.load_predictor(args, ctx)
    prompt = predictor.settings.prompt if args.prompt is None else args.prompt
    batch = CaptionBatch(predictor, runner.override_settings(predictor.settings.caption, args), prompt)
    options = runner.RunOptions(args.output_dir, "image_id", args.batch_size, args.save_every, args.resume)
    results = runner.run_sharded(units, lambda unit: [unit.image_id], batch, options, ctx)
    if results is None:
        return None
    runner.write_json(Path(args.output_dir) / f"{args.split}_caption_result.json", results)
    metrics = build_metrics(args, units, gt, results, batch, ctx)
    runner.write_json(Path(args.output_dir) / "metrics.json", metrics)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mixkit eval caption`."""
    parser.add_argument("--records", required=True, type=Path,
                        help="COCO-Karpathy test records JSON: [{'image', 'caption': [refs], 'image_id'?}]")
    parser.add_argument("--image-root", required=True, type=Path, help="folder the records' image paths are under")
    parser.add_argument("--gt", type=Path, default=None, help="COCO-captions ground-truth JSON, for scoring")
    parser.add_argument("--spice", action="store_true", help="also compute SPICE (needs its CoreNLP jars)")
    parser.add_argument("--split", default="test",
                        help="names the result file {split}_caption_result.json (default test)")
    runner.add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """`mixkit eval caption`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return runner.run_evaluation("caption", evaluate, score_table, args, (CaptionScoreError,))


def main(argv: Sequence[str] | None = None) -> int:
    return runner.standalone_main("caption", add_arguments, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
