"""MiniGPT-v2's box text: `{<x1><y1><x2><y2>}` with integer corners on a 0-100 grid, both ways.

Sources (Vision-CAIR/MiniGPT-4 d94738a):
- built for training in `minigpt4/datasets/datasets/coco_dataset.py` (ReferCOCODataset.preprocess): corners
  `x / width * 100`, `y / height * 100` of the pixel box (x, y, x + w, y + h), each cut to an int, written
  `"{{<{}><{}><{}><{}>}}"`;
- read back in `eval_scripts/eval_ref.py`: spaces and `<unk>` removed, the answer must *start* with
  `\\{<\\d{1,3}><\\d{1,3}><\\d{1,3}><\\d{1,3}>\\}` (`re.match`), the integers scaled by `/ 100 * width` (x) and
  `/ 100 * height` (y); IoU as `minigpt4/common/eval_utils.py::computeIoU` (pixel areas counted with +1);
- grounded captions (`demo_v2.py`): `<p>phrase</p> {<..><..><..><..>}` with several boxes joined by `<delim>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BOX_BINS = 100  # `bounding_box_size` in demo_v2.py, `--res` in eval_ref.py
REFER_ANSWER = re.compile(r"\{<\d{1,3}><\d{1,3}><\d{1,3}><\d{1,3}>\}")
_BOX = re.compile(r"\{<(-?\d+)><(-?\d+)><(-?\d+)><(-?\d+)>\}")
_PHRASE_BOXES = re.compile(r"<p>(.*?)</p>\s*((?:\{<-?\d+><-?\d+><-?\d+><-?\d+>\}(?:\s*<delim>\s*)?)+)")

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def format_box(box: Sequence[float], width: int, height: int, bins: int = BOX_BINS) -> str:
    """Pixel corners (x1, y1, x2, y2) -> `{<x1><y1><x2><y2>}` on the 0-`bins` grid (cut to ints)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    x1, y1, x2, y2 = box
    scaled = (x1 / width * bins, y1 / height * bins, x2 / width * bins, y2 / height * bins)
    return "{{<{}><{}><{}><{}>}}".format(*(int(value) for value in scaled))


def _to_pixels(numbers: Sequence[int], width: int, height: int, bins: int) -> Box:
    x1, y1, x2, y2 = numbers
    return (x1 / bins * width, y1 / bins * height, x2 / bins * width, y2 / bins * height)


def parse_refer_answer(text: str, width: int, height: int, bins: int = BOX_BINS) -> Box | None:
    """The pixel box of a `[refer]` answer as `eval_ref.py` reads it, or None when it is no box."""
    cleaned = text.replace("<unk>", "").replace(" ", "").strip()
    if not REFER_ANSWER.match(cleaned):
        return None
    numbers = [int(value) for value in re.findall(r"\d+", cleaned)[:4]]
    return _to_pixels(numbers, width, height, bins)


def parse_boxes(text: str, width: int, height: int, bins: int = BOX_BINS) -> list[tuple[str | None, Box]]:
    """Every box in a generation: (phrase, box) for `<p>phrase</p> {..}<delim>{..}` runs (grounded captions,
    detection), (None, box) for bare boxes (refer answers)."""
    found: list[tuple[str | None, Box]] = []
    covered: list[tuple[int, int]] = []
    for match in _PHRASE_BOXES.finditer(text):
        covered.append(match.span())
        for numbers in _BOX.findall(match.group(2)):
            found.append((match.group(1).strip(), _to_pixels([int(n) for n in numbers], width, height, bins)))
    for match in _BOX.finditer(text):
        if not any(start <= match.start() < end for start, end in covered):
            found.append((None, _to_pixels([int(n) for n in match.groups()], width, height, bins)))
    return found


def box_iou(first: Sequence[float], second: Sequence[float]) -> float:
    """`computeIoU` of the official eval: corner boxes, areas counted with +1 pixel on each side."""
    x1, y1, x2, y2 = first
    x3, y3, x4, y4 = second
    inter_w = max(0.0, min(x2, x4) - max(x1, x3) + 1)
    inter_h = max(0.0, min(y2, y4) - max(y1, y3) + 1)
    intersection = inter_w * inter_h
    union = (x2 - x1 + 1) * (y2 - y1 + 1) + (x4 - x3 + 1) * (y4 - y3 + 1) - intersection
    return intersection / union
