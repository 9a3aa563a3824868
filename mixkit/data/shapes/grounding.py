"""Referring expressions with boxes for the shapes data, in the RefCOCO evaluation format MiniGPT-v2 reads.

The official files (Vision-CAIR/MiniGPT-4 d94738a, `eval_scripts/eval_data/refcoco_val.json`, read by
`eval_scripts/eval_ref.py`) are a list of records `{"img_id", "sents", "bbox": [x, y, w, h], "height",
"width"}`, one per expression; the image of `img_id` "COCO_train2014_000000580957_4" is
`COCO_train2014_000000580957.jpg` (`img_id[:27]`). Here `img_id` is the image's path without ".jpg" plus
"_k" for its k-th shape, so the same rule (drop the last "_" field) finds the file under the dataset root.

Every shape's box is exact: the generator knows its centre and radius (`mixkit.data.shapes.scenes`).
"""

from __future__ import annotations

from pathlib import Path

from mixkit.data.shapes.config import SIZE_RADIUS, ShapesConfig
from mixkit.data.shapes.scenes import Shape
from mixkit.data.shapes.writer import make_example
from mixkit.utils.io import write_json


def shape_box(shape: Shape, image_size: int) -> list[float]:
    """[x, y, w, h] in pixels: the square around the shape's drawing radius (`_draw_shape`)."""
    radius = SIZE_RADIUS[shape.size] * image_size / 3
    left, top = shape.x * image_size - radius, shape.y * image_size - radius
    return [round(left, 2), round(top, 2), round(2 * radius, 2), round(2 * radius, 2)]


def referring_expression(shape: Shape) -> str:
    """Unique within a scene: no two shapes share a grid cell."""
    return f"the {shape.size} {shape.colour} {shape.kind} at the {shape.position}"


def refcoco_records(config: ShapesConfig, split: str) -> list[dict]:
    """One record per shape of every image of `split`, in the official RefCOCO eval format."""
    records = []
    for index in range(config.num_images(split)):
        example = make_example(split, index, config)
        stem = example.image.removesuffix(".jpg")
        for k, shape in enumerate(example.scene.shapes):
            records.append({"img_id": f"{stem}_{k}", "sents": referring_expression(shape),
                            "bbox": shape_box(shape, config.image_size), "height": config.image_size,
                            "width": config.image_size})
    return records


def refcoco_image_path(image_root: str | Path, img_id: str) -> Path:
    """`eval_ref.py`'s image rule generalised: the id without its last "_" field, plus ".jpg"."""
    return Path(image_root) / f"{img_id.rsplit('_', 1)[0]}.jpg"


def write_refcoco_file(root: str | Path, config: ShapesConfig, split: str) -> Path:
    """`annotations/refcoco_{split}.json` beside a shapes dataset written with the same config."""
    path = Path(root) / "annotations" / f"refcoco_{split}.json"
    write_json(path, refcoco_records(config, split))
    return path
