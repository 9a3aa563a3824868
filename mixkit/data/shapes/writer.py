"""Where the dataset's files go (`ShapesPaths`) and `write_shapes_dataset`, which draws and writes them all."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixkit.utils.progress import progress_bar

from mixkit.data.shapes.config import SPLITS, ShapesConfig
from mixkit.data.shapes.formats import (
    Example, coco_caption_gt, karpathy_eval_records, karpathy_train_records, lavis_vqa_records,
    vqa_annotations_file, vqa_questions_file,
)
from mixkit.data.shapes.scenes import generate_scene, render_scene
from mixkit.data.shapes.text import scene_captions, scene_questions
from mixkit.utils.io import write_json


@dataclass(frozen=True)
class ShapesPaths:
    """Where `write_shapes_dataset` puts every file; `ShapesPaths.under(root)` finds them."""

    root: Path
    images: dict[str, Path]
    caption_train: Path
    caption_val: Path
    caption_test: Path
    caption_gt: dict[str, Path]  # "val"/"test" -> COCO caption ground truth
    vqa_questions: dict[str, Path]
    vqa_annotations: dict[str, Path]
    vqa_train: Path
    vqa_val: Path
    vqa_test: Path

    @classmethod
    def under(cls, root: Path) -> ShapesPaths:
        root = Path(root)
        ann = root / "annotations"
        return cls(
            root=root,
            images={s: root / "images" / s for s in SPLITS},
            caption_train=ann / "caption_train.json",
            caption_val=ann / "caption_val.json",
            caption_test=ann / "caption_test.json",
            caption_gt={s: ann / f"caption_{s}_gt.json" for s in ("val", "test")},
            vqa_questions={s: ann / f"vqa_{s}_questions.json" for s in SPLITS},
            vqa_annotations={s: ann / f"vqa_{s}_annotations.json" for s in SPLITS},
            vqa_train=ann / "vqa_train.json",
            vqa_val=ann / "vqa_val.json",
            vqa_test=ann / "vqa_test.json",
        )


def image_relpath(split: str, index: int) -> str:
    return f"images/{split}/shapes_{split}_{index:06d}.jpg"


def make_example(split: str, index: int, config: ShapesConfig) -> Example:
    """The scene, captions and questions for one image, without drawing it."""
    # Independent streams per image and per purpose: changing a caption template
    # never changes a scene, and image k is the same whatever the split's length.
    def stream(purpose: str) -> random.Random:
        return random.Random(f"shapes/{config.seed}/{split}/{index}/{purpose}")

    scene = generate_scene(stream("scene"), config)
    captions = scene_captions(scene, stream("captions"), config.captions_per_image)
    questions = scene_questions(scene, stream("questions"))
    return Example(split, index, image_relpath(split, index), scene, captions, questions)


def write_shapes_dataset(root: Path, config: ShapesConfig, progress: bool = False) -> ShapesPaths:
    """Draw every image and write every annotation file under `root`."""
    paths = ShapesPaths.under(root)
    for directory in [*paths.images.values(), paths.caption_train.parent]:
        directory.mkdir(parents=True, exist_ok=True)
    total = sum(config.num_images(s) for s in SPLITS)
    with progress_bar(total=total, disable=not progress, unit="img", desc="shapes") as bar:
        for split in SPLITS:
            examples = []
            for index in range(config.num_images(split)):
                examples.append(make_example(split, index, config))
                _save_image(examples[-1], paths.root, config.image_size)
                bar.update()
            _write_annotations(paths, split, examples)
    return paths


def _save_image(example: Example, root: Path, size: int) -> None:
    # 4:4:4 chroma keeps the colours of 5-pixel shapes from bleeding into the background.
    render_scene(example.scene, size).save(root / example.image, quality=90, subsampling=0)


def _write_annotations(paths: ShapesPaths, split: str, examples: list[Example]) -> None:
    if split == "train":
        _dump(paths.caption_train, karpathy_train_records(examples))
        _dump(paths.vqa_train, lavis_vqa_records(examples))
    else:
        _dump(getattr(paths, f"caption_{split}"), karpathy_eval_records(examples))
        _dump(paths.caption_gt[split], coco_caption_gt(examples))
        _dump(getattr(paths, f"vqa_{split}"), lavis_vqa_records(examples))
    _dump(paths.vqa_questions[split], vqa_questions_file(examples, split))
    _dump(paths.vqa_annotations[split], vqa_annotations_file(examples, split))


def _dump(path: Path, obj: Any) -> None:
    # Sorted keys and no timestamps: the same config gives byte-identical files.
    write_json(path, _with_sorted_keys(obj))


def _with_sorted_keys(obj: Any) -> Any:
    """A copy whose dicts list their keys in sorted order, as ``json.dumps(sort_keys=True)`` writes them."""
    if isinstance(obj, dict):
        return {key: _with_sorted_keys(obj[key]) for key in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_with_sorted_keys(value) for value in obj]
    return obj
