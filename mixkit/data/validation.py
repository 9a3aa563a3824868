"""Check annotation files before a run starts, so a bad record fails in seconds, not hours.

One schema per record kind (LAVIS's formats; `FIELDS` is the single source of truth,
also used by `mixkit.data.loading` when it loads a file):

- ``caption_train``: ``{"caption": str, "image": str, "image_id"?: str | int}``, one per caption
- ``caption_eval``:  ``{"caption": [str, ...], "image": str, "image_id"?: int | str}``
- ``vqa_train``:     ``{"question_id": int, "question": str, "answer": [str, ...], "image": str, "dataset"?: str}``
- ``vqa_eval``:      ``{"question_id": int, "question": str, "image": str, "answer"?: [str, ...]}``

A file is a JSON list of records, or JSON lines (``.jsonl``/``.ndjson``: one record per
line). Records are numbered from 0, as positions in that list (``records[N]``).
`image` is a path relative to the image root.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mixkit.utils.io import JsonFileError, read_json

RECORD_KINDS: tuple[str, ...] = ("caption_train", "caption_eval", "vqa_train", "vqa_eval")
JSON_LINES_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")


class AnnotationError(ValueError):
    """An annotation file that cannot be read or whose records break the schema."""


# ------------------------------------------------------------------------- field types


def _non_empty_str(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    return None if value.strip() else "must not be empty"


def _int(value: Any) -> str | None:
    # bool is an int subclass, but a question id of `true` is always a mistake.
    ok = isinstance(value, int) and not isinstance(value, bool)
    return None if ok else f"expected an integer, got {type(value).__name__}"


def _str_or_int(value: Any) -> str | None:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    return f"expected a string or an integer, got {type(value).__name__}"


def _str_list(value: Any, item_check: Callable[[Any], str | None]) -> str | None:
    if not isinstance(value, list):
        return f"expected a list of strings, got {type(value).__name__}"
    if not value:
        return "must be a non-empty list"
    for i, item in enumerate(value):
        problem = item_check(item)
        if problem is not None:
            return f"item {i}: {problem}"
    return None


def _answers(value: Any) -> str | None:
    # An empty answer string does occur in VQAv2's annotator answers, so only the type is checked.
    return _str_list(value, lambda v: None if isinstance(v, str) else f"expected a string, got {type(v).__name__}")


def _references(value: Any) -> str | None:
    return _str_list(value, _non_empty_str)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    check: Callable[[Any], str | None]
    required: bool = True


FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    "caption_train": (FieldSpec("caption", _non_empty_str), FieldSpec("image", _non_empty_str),
                      FieldSpec("image_id", _str_or_int, required=False)),
    "caption_eval": (FieldSpec("caption", _references), FieldSpec("image", _non_empty_str),
                     FieldSpec("image_id", _str_or_int, required=False)),
    "vqa_train": (FieldSpec("question_id", _int), FieldSpec("question", _non_empty_str),
                  FieldSpec("answer", _answers), FieldSpec("image", _non_empty_str),
                  FieldSpec("dataset", _non_empty_str, required=False)),
    "vqa_eval": (FieldSpec("question_id", _int), FieldSpec("question", _non_empty_str),
                 FieldSpec("image", _non_empty_str), FieldSpec("answer", _answers, required=False)),
}


def check_kind(kind: str) -> None:
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown annotation kind {kind!r}; expected one of {', '.join(RECORD_KINDS)}")


def record_problems(record: Any, kind: str) -> list[tuple[str | None, str]]:
    """(field, problem) pairs for one record; an empty list when it fits the schema."""
    if not isinstance(record, dict):
        return [(None, f"expected a JSON object, got {type(record).__name__}")]
    problems: list[tuple[str | None, str]] = []
    for spec in FIELDS[kind]:
        if spec.name not in record:
            if spec.required:
                problems.append((spec.name, "missing"))
            continue
        problem = spec.check(record[spec.name])
        if problem is not None:
            problems.append((spec.name, problem))
    return problems


# ----------------------------------------------------------------------------- reading


def read_records(path: str | Path) -> list[Any]:
    """The records of a JSON list or JSON-lines file; syntax errors name file, line and column."""
    path = Path(path)
    if path.suffix.lower() in JSON_LINES_SUFFIXES:
        return _read_json_lines(path)
    try:
        data = read_json(path, "annotation file")
    except JsonFileError as error:
        raise AnnotationError(str(error)) from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got a {type(data).__name__}")
    return data


def _read_json_lines(path: Path) -> list[Any]:
    if not path.is_file():
        raise AnnotationError(f"annotation file: {path}: file not found")
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():  # a trailing blank line is common and harmless
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            # Worded as `read_json` words a whole file's error.
            raise AnnotationError(f"annotation file: {path}: not valid JSON "
                                  f"(line {line_number}, column {error.colno}: {error.msg})") from None
    return records


# -------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    """One broken rule, located as precisely as possible."""

    path: Path
    record: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = str(self.path) + ("" if self.record is None else f":record {self.record}")
        what = "" if self.field is None else f"field {self.field!r}: "
        return f"{where}: {what}{self.message}"


@dataclass
class ValidationReport:
    """What `validate_annotations` found; `problems` holds every problem, not only the listed ones."""

    path: Path
    kind: str
    num_records: int
    num_images: int  # distinct image paths referenced
    images_checked: bool
    problems: list[Problem] = field(default_factory=list)
    missing_images: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        checked = "checked" if self.images_checked else "not checked"
        return (f"{self.path}: {self.num_records} {self.kind} records, {self.num_images} distinct images "
                f"({checked}), {len(self.problems)} problems")

    def error_message(self, max_listed: int = 5) -> str:
        lines = [f"{self.path}: {len(self.problems)} problems in {self.num_records} {self.kind} records"
                 + (f" ({self.missing_images} missing images)" if self.missing_images else "")]
        lines += [f"  {problem}" for problem in self.problems[:max_listed]]
        if len(self.problems) > max_listed:
            lines.append(f"  ... and {len(self.problems) - max_listed} more")
        return "\n".join(lines)


def _schema_problems(path: Path, records: list[Any], kind: str) -> list[Problem]:
    return [Problem(path, index, name, message)
            for index, record in enumerate(records)
            for name, message in record_problems(record, kind)]


def _duplicate_question_ids(path: Path, records: list[Any]) -> list[Problem]:
    first_seen: dict[int, int] = {}
    problems = []
    for index, record in enumerate(records):
        qid = record.get("question_id") if isinstance(record, dict) else None
        if not isinstance(qid, int):
            continue
        if qid in first_seen:
            problems.append(Problem(path, index, "question_id",
                                    f"duplicate id {qid} (first at record {first_seen[qid]})"))
        else:
            first_seen[qid] = index
    return problems


def records_problems(path: Path, records: list[Any], kind: str) -> list[Problem]:
    """Every schema problem of a file's records, plus duplicate question ids for VQA kinds."""
    check_kind(kind)
    problems = _schema_problems(path, records, kind)
    if kind.startswith("vqa"):
        problems += _duplicate_question_ids(path, records)
    return problems


def _image_paths(records: list[Any]) -> dict[str, int]:
    """Distinct `image` values -> the first record that names them."""
    images: dict[str, int] = {}
    for index, record in enumerate(records):
        image = record.get("image") if isinstance(record, dict) else None
        if isinstance(image, str) and image:
            images.setdefault(image, index)
    return images


def _missing_image_problems(path: Path, images: dict[str, int], image_root: Path) -> list[Problem]:
    # One stat per distinct image: caption files repeat each image ~5 times.
    return [Problem(path, index, "image", f"file not found: {image_root / image}")
            for image, index in images.items() if not (image_root / image).is_file()]


def validate_annotations(path: str | Path, kind: str, image_root: str | Path | None = None,
                         check_images: bool = True, max_listed: int = 5) -> ValidationReport:
    """Check every record of `path` against the `kind` schema and, optionally, that its images exist.

    Returns the report when all is well; raises `AnnotationError` listing the first
    `max_listed` problems (``file:record N: field 'x': problem``) and their total count.
    """
    check_kind(kind)
    path = Path(path)
    if check_images and image_root is None:
        raise ValueError("check_images=True needs an image_root")
    records = read_records(path)
    images = _image_paths(records)
    problems = records_problems(path, records, kind)
    missing = _missing_image_problems(path, images, Path(image_root)) if check_images else []
    report = ValidationReport(path, kind, len(records), len(images), check_images,
                              problems + missing, len(missing))
    if not report.ok:
        raise AnnotationError(report.error_message(max_listed))
    return report


# --------------------------------------------------------------------------------- CLI


def add_annotation_arguments(parser: argparse.ArgumentParser, image_root_required: bool,
                             kinds: tuple[str, ...] = RECORD_KINDS) -> None:
    """`--kind`, `--annotations` and `--image-root`: what every `mixkit data` action reads."""
    parser.add_argument("--kind", required=True, choices=kinds, help="record schema of the annotations")
    parser.add_argument("--annotations", required=True, type=Path, help="JSON or JSON-lines annotation file")
    parser.add_argument("--image-root", type=Path, required=image_root_required, default=None,
                        help="folder the records' `image` paths are relative to")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mixkit data check`` (which also checks COCO instances files: `coco_validation`)."""
    add_annotation_arguments(parser, image_root_required=False, kinds=(*RECORD_KINDS, "coco_instances"))
    parser.add_argument("--no-check-images", dest="check_images", action="store_false",
                        help="skip the image existence check")
    parser.add_argument("--max-listed", type=int, default=5, help="how many problems to print")


def run(args: argparse.Namespace) -> int:
    """Print a summary and return 0, or print the problems and return 2."""
    if args.check_images and args.image_root is None:
        print("error: --image-root is needed to check images (or pass --no-check-images)")
        return 2
    from mixkit.data.coco_validation import COCO_KIND, validate_coco_instances

    validate = validate_coco_instances if args.kind == COCO_KIND else validate_annotations
    kind_args = () if args.kind == COCO_KIND else (args.kind,)
    try:
        report = validate(args.annotations, *kind_args, args.image_root,
                          check_images=args.check_images, max_listed=args.max_listed)
    except AnnotationError as error:
        print(f"error: {error}")
        return 2
    print(report.summary())
    return 0
