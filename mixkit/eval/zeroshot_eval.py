"""`mixkit eval zeroshot`: zero-shot image classification (ImageNet style) with a CLIP or EVA-CLIP checkpoint.

The classifier is CLIP's: each class name is put into every prompt template, the prompts' L2-normalised text
features are averaged per class and renormalised (open_clip `zero_shot_classifier.py`); an image is scored
against every class by cosine similarity and its predictions are the classes in decreasing order (ties: the
lower class index first). With OpenAI's 80 templates and 1000 class names (`--classes imagenet --templates
openai-imagenet`, shipped in `mixkit.data.zeroshot`) this is the ImageNet protocol whose top-1 figures the CLIP,
open_clip and EVA-CLIP papers report.

Inputs: `--images` is a JSON list of `{"image": path, "label": class index or class name}` (a name must name
exactly one class; OpenAI's ImageNet list repeats "missile" and "sunglasses": use indices there). Images are
shared out over the `torchrun` processes (`mixkit.eval.sharding`), partial results are saved and `--resume`
reuses them. Output, in `--output-dir`:

  {split}_zeroshot_result.json  per image: index, path, label and the top-5 predicted class indices
  metrics.json                  top-1 / top-5 accuracy and the mean per-class top-1 (percent), per-class
                                accuracy, the class and template counts, the templates, versions
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mixkit.data.zeroshot import ZeroShotDataError, load_classes, load_templates
from mixkit.eval.command import check_config, dataclass_from_args, load_model, run_evaluation, standalone_main
from mixkit.eval.config import ZeroShotEvalConfig
from mixkit.eval.inputs import EvalInputError, check_images_exist, load_json_file
from mixkit.eval.reporting import format_table, write_outputs
from mixkit.eval.retrieval import sorted_columns
from mixkit.eval.sharding import RunOptions, run_sharded
from mixkit.pipelines.options import DEFAULT_TEMPLATE
from mixkit.utils.distributed import DistContext
from mixkit.utils.versions import library_versions

TOP_K = 5
SCORE_ORDER = ("top1", "top5", "mean_per_class")


# ---------------------------------------------------------------- inputs


def _label_index(label: Any, classes: Sequence[str], index: int, source: str) -> int:
    if isinstance(label, int) and not isinstance(label, bool):
        if not 0 <= label < len(classes):
            raise EvalInputError(f"{source}: record {index}: label {label} is outside 0..{len(classes) - 1}")
        return label
    if isinstance(label, str):
        matches = [i for i, name in enumerate(classes) if name == label]
        if len(matches) != 1:
            problem = "is not a class name" if not matches else f"names {len(matches)} classes (give its index)"
            raise EvalInputError(f"{source}: record {index}: label {label!r} {problem}")
        return matches[0]
    raise EvalInputError(f"{source}: record {index}: 'label' must be a class index or a class name")


def parse_images(data: object, classes: Sequence[str], image_root: Path, source: str) -> list[dict]:
    """The eval units: {"index", "image" (full path), "label" (class index)}, in file order."""
    if not isinstance(data, list) or not data:
        raise EvalInputError(f"{source}: expected a non-empty list of {{'image', 'label'}} records")
    units = []
    for index, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("image"), str) or "label" not in record:
            raise EvalInputError(f"{source}: record {index}: needs an 'image' path (a string) and a 'label'")
        label = _label_index(record["label"], classes, index, source)
        units.append({"index": index, "image": str(Path(image_root) / record["image"]), "label": label})
    return units


def _class_lists(config: ZeroShotEvalConfig) -> tuple[list[str], list[str]]:
    try:
        classes = load_classes(config.classes)
        templates = load_templates(config.templates) if config.templates is not None else [DEFAULT_TEMPLATE]
    except ZeroShotDataError as error:
        raise EvalInputError(str(error)) from None
    return classes, templates


# ---------------------------------------------------------------- scores


def zeroshot_scores(labels: Sequence[int], predictions: Sequence[Sequence[int]],
                    classes: Sequence[str]) -> tuple[dict[str, float], list[dict]]:
    """(top-1, top-5 and mean per-class top-1 in percent; per class: count and top-1 / top-5 in percent).
    `predictions[i]` lists image i's classes best first (at least min(5, classes) of them). Classes without
    images get null accuracies and stay out of the per-class mean."""
    counts = [0] * len(classes)
    hits1, hits5 = [0] * len(classes), [0] * len(classes)
    for label, ranked in zip(labels, predictions, strict=True):
        counts[label] += 1
        hits1[label] += int(ranked[0] == label)
        hits5[label] += int(label in ranked[:TOP_K])
    per_class = [{"index": i, "class": name, "count": counts[i],
                  "top1": 100.0 * hits1[i] / counts[i] if counts[i] else None,
                  "top5": 100.0 * hits5[i] / counts[i] if counts[i] else None} for i, name in enumerate(classes)]
    seen = [row["top1"] for row in per_class if row["count"]]
    total = len(labels)
    scores = {"top1": 100.0 * sum(hits1) / total, "top5": 100.0 * sum(hits5) / total,
              "mean_per_class": sum(seen) / len(seen)}
    return scores, per_class


# ---------------------------------------------------------------- the run


def _load_pipeline(config: ZeroShotEvalConfig, ctx: DistContext) -> Any:
    from mixkit.pipelines.auto import load_pipeline

    pipeline = load_model(lambda: load_pipeline(config.model, task="classify", device=ctx.device(config.device)),
                          config.model)
    if not hasattr(pipeline, "class_features"):
        raise EvalInputError(f"--model {config.model}: zero-shot evaluation needs a CLIP or EVA-CLIP checkpoint")
    return pipeline


def _predict(pipeline: Any, class_feats: torch.Tensor, batch: Sequence[dict]) -> list[dict]:
    """Per image: its classes best first (the top 5 kept)."""
    image_feats = pipeline.image_features([unit["image"] for unit in batch])
    ranked = sorted_columns(pipeline.itc_similarity(image_feats, class_feats).float().cpu())[:, :TOP_K]
    return [{**unit, "top5": row} for unit, row in zip(batch, ranked.tolist())]


def build_metrics(config: ZeroShotEvalConfig, records: list[dict], classes: list[str], templates: list[str],
                  ctx: DistContext) -> dict:
    scores, per_class = zeroshot_scores([r["label"] for r in records], [r["top5"] for r in records], classes)
    return {"task": "zeroshot", "split": config.split, "model": str(config.model), "scores": scores,
            "per_class": per_class, "num_images": len(records), "num_classes": len(classes),
            "num_templates": len(templates), "templates": templates, "batch_size": config.batch_size,
            "world_size": ctx.world_size, "versions": library_versions()}


def score_table(metrics: dict) -> str:
    rows: list[tuple[str, object]] = [("images", metrics["num_images"]), ("classes", metrics["num_classes"]),
                                      ("templates", metrics["num_templates"])]
    rows += [(name, metrics["scores"][name]) for name in SCORE_ORDER]
    return format_table(rows, f"Zero-shot {metrics['split']}: {metrics['model']}")


def evaluate_zeroshot(config: ZeroShotEvalConfig, ctx: DistContext | None = None) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    ctx = ctx or DistContext()
    check_config(config)
    classes, templates = _class_lists(config)
    image_root = config.image_root if config.image_root is not None else Path(config.images).parent
    units = parse_images(load_json_file(config.images, "--images"), classes, image_root, str(config.images))
    check_images_exist([Path(unit["image"]) for unit in units])
    pipeline = _load_pipeline(config, ctx)
    class_feats = pipeline.class_features(classes, templates)
    options = RunOptions(config.output_dir, key="index", batch_size=config.batch_size,
                         save_every=config.save_every, resume=config.resume)
    records = run_sharded(units, lambda unit: [unit["index"]], lambda batch: _predict(pipeline, class_feats, batch),
                          options, ctx)
    if records is None:
        return None
    metrics = build_metrics(config, records, classes, templates, ctx)
    return write_outputs(config.output_dir, f"{config.split}_zeroshot_result.json", records, metrics)


def run(args: argparse.Namespace) -> int:
    """`mixkit eval zeroshot`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return run_evaluation("zeroshot", evaluate_zeroshot, dataclass_from_args(ZeroShotEvalConfig, args), score_table)


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main(ZeroShotEvalConfig, run, "zeroshot", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
