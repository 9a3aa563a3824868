"""The COCO instances file of `auto_label`: boxes clipped to the image, RLE masks (pycocotools), categories from
the caption tags. Pure data transforms over the per-image records, so they are the same whatever the sharding.

A record (one per image, what a labelling process saves): {"image_id", "file_name", "width", "height",
"caption", "tags": [..], "detections": [{"box": [x0, y0, x1, y1] (unclipped float pixels), "label", "score",
"segmentation": {"size": [h, w], "counts": str}}]}.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

# The category of a box whose phrase names none of its image's tags (e.g. an empty phrase: no token above
# text_threshold); the phrase itself stays in the annotation's "phrase".
UNMATCHED_CATEGORY = "object"


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a boolean [H, W] mask, `counts` as text (JSON-ready)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_area(rle: dict[str, Any]) -> int:
    from pycocotools import mask as coco_mask

    return int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def clip_box(box: Sequence[float], width: int, height: int) -> list[float] | None:
    """[x, y, w, h] of the box clipped to the image; None when nothing of it lies inside."""
    x0, y0 = min(max(box[0], 0.0), width), min(max(box[1], 0.0), height)
    x1, y1 = min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def category_name(label: str, tags: Sequence[str]) -> str:
    """The tag a detected phrase names: the phrase itself if it is a tag, else the first tag that occurs in it
    as a word, else `UNMATCHED_CATEGORY`."""
    phrase = label.strip()
    if phrase in tags:
        return phrase
    for tag in tags:
        if re.search(rf"\b{re.escape(tag)}\b", phrase):
            return tag
    return UNMATCHED_CATEGORY


def coco_categories(records: Sequence[dict]) -> dict[str, int]:
    """Category ids from 1, names sorted: every tag of every image (plus `UNMATCHED_CATEGORY` if needed)."""
    names = {tag for record in records for tag in record["tags"]}
    names |= {category_name(d["label"], record["tags"]) for record in records for d in record["detections"]}
    return {name: index for index, name in enumerate(sorted(names), start=1)}


def coco_instances(records: Sequence[dict], description: str = "mixkit auto_label") -> dict[str, Any]:
    """The COCO instances dictionary of the records (sorted by image id)."""
    categories = coco_categories(records)
    images, annotations = [], []
    for record in sorted(records, key=lambda r: r["image_id"]):
        images.append({"id": record["image_id"], "file_name": record["file_name"], "width": record["width"],
                       "height": record["height"], "caption": record["caption"]})
        for detection in record["detections"]:
            bbox = clip_box(detection["box"], record["width"], record["height"])
            if bbox is None:
                continue
            annotations.append({
                "id": len(annotations) + 1, "image_id": record["image_id"],
                "category_id": categories[category_name(detection["label"], record["tags"])],
                "bbox": bbox, "area": rle_area(detection["segmentation"]),
                "segmentation": detection["segmentation"], "iscrowd": 0, "score": detection["score"],
                "phrase": detection["label"]})
    return {"info": {"description": description}, "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": name, "supercategory": ""} for name, i in categories.items()]}
