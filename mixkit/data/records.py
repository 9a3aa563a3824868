"""Rules that read meaning out of one LAVIS annotation record: its integer image id, its answer weights.

Datasets, tar shards and scorers all apply these to the same records, so each rule lives
here once; the record schemas themselves are in `mixkit.data.validation`.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import PurePosixPath
from typing import Any, Sequence

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²", which int() refuses


def lavis_image_id(record: dict[str, Any], index: int) -> int:
    """The record's integer image id, by LAVIS's rule; `index` (its position) only names it in errors.

    An int ``image_id`` is used as is, a string of digits as its int. Otherwise the id is
    the number after the last ``_`` of the image file's stem, as LAVIS's COCO caption eval
    reads it: ``val2014/COCO_val2014_000000391895.jpg`` -> 391895 (the records of
    ``coco_karpathy_test.json`` carry no id). A stem without ``_`` counts whole (``42.jpg``
    -> 42). Any other record raises `ValueError`.
    """
    value = record.get("image_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    image = record.get("image")
    last_field = PurePosixPath(str(image)).stem.rsplit("_", 1)[-1]
    if _DIGITS.fullmatch(last_field):
        return int(last_field)
    raise ValueError(f"record {index}: no integer image_id, and {image!r} does not end in _<number>")


def answer_weights(answers: Sequence[str]) -> tuple[list[str], list[float]]:
    """Distinct answers in first-seen order, each weighted by its share of the annotators (LAVIS)."""
    counts = Counter(answers)
    return list(counts), [count / len(answers) for count in counts.values()]
