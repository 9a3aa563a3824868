"""Check a COCO instances file (what `mixkit app run auto_label` writes, and detection datasets ship): the three
tables, unique ids, references between them, boxes inside their image, masks of their image's size.

Used by `mixkit data check --kind coco_instances`; problems are reported as `validation.Problem`s located by
table and position (`annotations[3]`), the first few listed with their total.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixkit.data.validation import AnnotationError, Problem, ValidationReport
from mixkit.utils.io import JsonFileError, read_json

COCO_KIND = "coco_instances"
TABLES = ("images", "annotations", "categories")
BOX_TOLERANCE = 1e-3  # pixels: float rounding of a box clipped to the image


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    def __init__(self, path: Path):
        self.path = path
        self.problems: list[Problem] = []

    def add(self, table: str, index: int | None, field: str | None, message: str) -> None:
        where = table if index is None else f"{table}[{index}]"
        self.problems.append(Problem(self.path, None, field, f"{where}: {message}"))

    def ids(self, table: str, rows: list[Any]) -> dict[int, dict]:
        """Rows by id; non-objects, non-integer and duplicate ids reported."""
        found: dict[int, dict] = {}
        for index, row in enumerate(rows):
            if not isinstance(row, dict) or not _is_int(row.get("id")):
                self.add(table, index, "id", "expected an object with an integer id")
            elif row["id"] in found:
                self.add(table, index, "id", f"duplicate id {row['id']}")
            else:
                found[row["id"]] = row
        return found

    def image(self, index: int, row: dict) -> None:
        if not isinstance(row.get("file_name"), str) or not row["file_name"].strip():
            self.add("images", index, "file_name", "expected a non-empty string")
        for key in ("width", "height"):
            if not _is_int(row.get(key)) or row[key] <= 0:
                self.add("images", index, key, "expected a positive integer")

    def annotation(self, index: int, row: dict, images: dict[int, dict], categories: dict[int, dict]) -> None:
        image = images.get(row.get("image_id"))
        if image is None:
            self.add("annotations", index, "image_id", f"no image with id {row.get('image_id')!r}")
        if row.get("category_id") not in categories:
            self.add("annotations", index, "category_id", f"no category with id {row.get('category_id')!r}")
        if not _is_number(row.get("area")) or row["area"] < 0:
            self.add("annotations", index, "area", "expected a number >= 0")
        if row.get("iscrowd", 0) not in (0, 1):
            self.add("annotations", index, "iscrowd", "expected 0 or 1")
        self.box(index, row.get("bbox"), image)
        if "segmentation" in row:
            self.segmentation(index, row["segmentation"], image)

    def box(self, index: int, box: Any, image: dict | None) -> None:
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            self.add("annotations", index, "bbox", "expected [x, y, width, height] numbers")
            return
        x, y, w, h = box
        if w < 0 or h < 0:
            self.add("annotations", index, "bbox", f"negative width or height: {box}")
        elif image is not None and _is_int(image.get("width")) and _is_int(image.get("height")) and (
                x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > image["width"] + BOX_TOLERANCE
                or y + h > image["height"] + BOX_TOLERANCE):
            self.add("annotations", index, "bbox", f"{box} lies outside its {image['width']}x{image['height']} image")

    def segmentation(self, index: int, value: Any, image: dict | None) -> None:
        if isinstance(value, list):  # polygons
            if not all(isinstance(p, list) and len(p) >= 6 and all(_is_number(v) for v in p) for p in value):
                self.add("annotations", index, "segmentation", "polygons must be lists of >= 3 x, y pairs")
            return
        if not isinstance(value, dict) or not isinstance(value.get("counts"), (str, list)):
            self.add("annotations", index, "segmentation", "expected polygons or an RLE {size, counts}")
            return
        if image is not None and value.get("size") != [image.get("height"), image.get("width")]:
            self.add("annotations", index, "segmentation",
                     f"RLE size {value.get('size')} is not its image's [height, width]")


def _load(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path, "annotation file")
    except JsonFileError as error:
        raise AnnotationError(str(error)) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(t), list) for t in TABLES):
        raise AnnotationError(f"{path}: a COCO instances file is an object with the lists {', '.join(TABLES)}")
    return data


def validate_coco_instances(path: str | Path, image_root: str | Path | None = None, check_images: bool = True,
                            max_listed: int = 5) -> ValidationReport:
    """The report when the file is sound; else `AnnotationError` listing the first problems and their count."""
    path = Path(path)
    if check_images and image_root is None:
        raise ValueError("check_images=True needs an image_root")
    data = _load(path)
    checker = _Checker(path)
    images, categories = checker.ids("images", data["images"]), checker.ids("categories", data["categories"])
    annotations = checker.ids("annotations", data["annotations"])
    for index, row in enumerate(data["images"]):
        if isinstance(row, dict):
            checker.image(index, row)
    for index, row in enumerate(data["annotations"]):
        if isinstance(row, dict):
            checker.annotation(index, row, images, categories)
    missing = 0
    if check_images:
        for index, row in enumerate(data["images"]):
            name = row.get("file_name") if isinstance(row, dict) else None
            if isinstance(name, str) and name and not (Path(image_root) / name).is_file():
                checker.add("images", index, "file_name", f"file not found: {Path(image_root) / name}")
                missing += 1
    report = ValidationReport(path, COCO_KIND, len(annotations), len(images), check_images, checker.problems,
                              missing)
    if not report.ok:
        raise AnnotationError(report.error_message(max_listed))
    return report
