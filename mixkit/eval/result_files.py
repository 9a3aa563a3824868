"""Loading and validation of the JSON files the scorers read.

Every problem becomes a `ResultFileError` whose message is one line naming the file (or the
in-memory source), the record index and the field, so a user can fix a 200k-record results
file without reading a traceback. The official evaluators instead fail with a `KeyError` or an
`assert` deep inside the scoring loop, or silently keep the last of two duplicate records.

Formats (the official VQAv2 and COCO captions ones):
  VQA questions    {"questions": [{"question_id", "image_id", "question"}]}
  VQA annotations  {"annotations": [{"question_id", "image_id", "question_type", "answer_type",
                    "answers": [{"answer", "answer_confidence", "answer_id"}], "multiple_choice_answer"}]}
  VQA results      [{"question_id", "answer"}]
  caption truth    {"images": [{"id"}], "annotations": [{"image_id", "caption"}]}
  caption results  [{"image_id", "caption"}]
Extra keys are allowed everywhere; ids are ints or strings (never bools).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixkit.utils.io import JsonFileError, read_json

# How many offending ids an error message quotes before "...".
_SHOWN_IDS = 5

_ID = (int, str)
VQA_QUESTION_FIELDS: dict[str, tuple[type, ...]] = {"question_id": _ID, "image_id": _ID, "question": (str,)}
VQA_ANNOTATION_FIELDS: dict[str, tuple[type, ...]] = {
    "question_id": _ID,
    "image_id": _ID,
    "question_type": (str,),
    "answer_type": (str,),
    "answers": (list,),
    "multiple_choice_answer": (str,),
}
VQA_ANSWER_FIELDS: dict[str, tuple[type, ...]] = {
    "answer": (str,),
    "answer_confidence": (str,),
    "answer_id": _ID,
}
VQA_RESULT_FIELDS: dict[str, tuple[type, ...]] = {"question_id": _ID, "answer": (str,)}
CAPTION_IMAGE_FIELDS: dict[str, tuple[type, ...]] = {"id": _ID}
CAPTION_GT_FIELDS: dict[str, tuple[type, ...]] = {"image_id": _ID, "caption": (str,)}
CAPTION_RESULT_FIELDS: dict[str, tuple[type, ...]] = {"image_id": _ID, "caption": (str,)}


class ResultFileError(ValueError):
    """A results or ground-truth file that cannot be scored; the message is one line."""


@dataclass(frozen=True)
class Coverage:
    """How many ground-truth items were scored, out of how many there are."""

    scored: int
    total: int

    def to_json(self) -> dict[str, int]:
        return {"scored": self.scored, "total": self.total}


def load_json(path: str | Path) -> Any:
    """Parse a JSON file, turning every failure into a one-line `ResultFileError`."""
    try:
        return read_json(path)
    except JsonFileError as error:
        raise ResultFileError(str(error)) from None


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_record(record: Any, fields: dict[str, tuple[type, ...]], where: str) -> dict:
    """Check that `record` is an object holding `fields` with the right types."""
    if not isinstance(record, dict):
        raise ResultFileError(f"{where}: expected an object, got {_json_type(record)}")
    for name, types in fields.items():
        if name not in record:
            raise ResultFileError(f"{where}: missing field '{name}'")
        value = record[name]
        # bool is an int subclass; an id of `true` is a bug, not an id.
        if isinstance(value, bool) or not isinstance(value, types):
            raise ResultFileError(
                f"{where}: field '{name}' must be {_type_names(types)}, got {_json_type(value)}"
            )
    return record


def check_records(records: Any, fields: dict[str, tuple[type, ...]], source: str) -> list[dict]:
    """Check a JSON list of records; `source` names the file (and key) in messages."""
    if not isinstance(records, list):
        raise ResultFileError(f"{source}: expected a list of records, got {_json_type(records)}")
    return [check_record(r, fields, f"{source}: record {i}") for i, r in enumerate(records)]


def top_level_list(data: Any, key: str, source: str) -> Any:
    """`data[key]` of a ground-truth file whose top level must be an object."""
    if not isinstance(data, dict):
        raise ResultFileError(f"{source}: expected an object with key '{key}', got {_json_type(data)}")
    if key not in data:
        raise ResultFileError(f"{source}: missing top-level key '{key}'")
    return data[key]


def index_by_id(records: Sequence[dict], key: str, source: str) -> dict[Hashable, dict]:
    """Map `record[key]` to the record, refusing duplicates (the official tools keep the last)."""
    index: dict[Hashable, dict] = {}
    first_seen: dict[Hashable, int] = {}
    for i, record in enumerate(records):
        ident = record[key]
        if ident in index:
            raise ResultFileError(
                f"{source}: record {i}: field '{key}': duplicate id {ident!r} (first in record {first_seen[ident]})"
            )
        index[ident] = record
        first_seen[ident] = i
    return index


def _sample(ids: Sequence[Hashable]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOWN_IDS])
    return shown + (", ..." if len(ids) > _SHOWN_IDS else "")


def match_ids(
    result_ids: Iterable[Hashable],
    truth_ids: Sequence[Hashable],
    *,
    allow_partial: bool,
    source: str,
    id_name: str,
) -> tuple[list[Hashable], Coverage]:
    """The ground-truth ids to score (in ground-truth order) and the coverage.

    Without `allow_partial` the result ids must equal the ground-truth ids, as the official
    VQA `loadRes` asserts; with it, the intersection is scored and extra results are ignored.
    """
    results = set(result_ids)
    truth = set(truth_ids)
    extra = [i for i in result_ids if i not in truth]
    missing = [i for i in truth_ids if i not in results]
    if (extra or missing) and not allow_partial:
        problems = []
        if extra:
            problems.append(f"{len(extra)} {id_name}(s) not in the ground truth ({_sample(extra)})")
        if missing:
            problems.append(f"{len(missing)} ground-truth {id_name}(s) without a result ({_sample(missing)})")
        raise ResultFileError(f"{source}: {'; '.join(problems)}; allow partial results to score the intersection")
    scored = [i for i in truth_ids if i in results]
    if not scored:
        raise ResultFileError(f"{source}: no {id_name} in common with the ground truth")
    return scored, Coverage(scored=len(scored), total=len(truth_ids))


# ---------------------------------------------------------------- VQA files


def validate_vqa_questions(data: Any, source: str = "questions") -> dict[Hashable, dict]:
    """question_id -> question record."""
    records = check_records(top_level_list(data, "questions", source), VQA_QUESTION_FIELDS, f"{source}: questions")
    return index_by_id(records, "question_id", f"{source}: questions")


def _check_answers(answers: list, where: str) -> None:
    if not answers:
        raise ResultFileError(f"{where}: field 'answers' is empty")
    seen: set[Hashable] = set()
    for j, answer in enumerate(answers):
        check_record(answer, VQA_ANSWER_FIELDS, f"{where}: answers[{j}]")
        # The official tool leaves one answer *record* out by comparing whole records, so two
        # identical records would both be left out; distinct ids make "leave one out" exact.
        if answer["answer_id"] in seen:
            raise ResultFileError(f"{where}: answers[{j}]: field 'answer_id': duplicate id {answer['answer_id']!r}")
        seen.add(answer["answer_id"])


def validate_vqa_annotations(data: Any, source: str = "annotations") -> dict[Hashable, dict]:
    """question_id -> annotation record, in file order."""
    where = f"{source}: annotations"
    records = check_records(top_level_list(data, "annotations", source), VQA_ANNOTATION_FIELDS, where)
    for i, record in enumerate(records):
        _check_answers(record["answers"], f"{where}: record {i}")
    return index_by_id(records, "question_id", where)


def check_questions_match(questions: dict, annotations: dict, source: str = "questions") -> None:
    """The questions and annotations files must describe the same question ids."""
    only_q = [q for q in questions if q not in annotations]
    only_a = [q for q in annotations if q not in questions]
    if only_q or only_a:
        raise ResultFileError(
            f"{source}: questions and annotations disagree: {len(only_q)} question_id(s) without an annotation "
            f"({_sample(only_q)}), {len(only_a)} annotation(s) without a question ({_sample(only_a)})"
        )


def validate_vqa_results(data: Any, source: str = "results") -> dict[Hashable, str]:
    """question_id -> predicted answer."""
    records = check_records(data, VQA_RESULT_FIELDS, source)
    return {qid: r["answer"] for qid, r in index_by_id(records, "question_id", source).items()}


# ---------------------------------------------------------------- caption files


def validate_caption_truth(data: Any, source: str = "annotations") -> dict[Hashable, list[dict]]:
    """image_id -> its reference caption records, images in file order, captions in file order.

    These orders are the ones `pycocotools` gives `COCOEvalCap`, and the scorers' float sums
    depend on them.
    """
    images = check_records(top_level_list(data, "images", source), CAPTION_IMAGE_FIELDS, f"{source}: images")
    refs: dict[Hashable, list[dict]] = {i: [] for i in index_by_id(images, "id", f"{source}: images")}
    raw = top_level_list(data, "annotations", source)
    annotations = check_records(raw, CAPTION_GT_FIELDS, f"{source}: annotations")
    for i, ann in enumerate(annotations):
        if ann["image_id"] not in refs:
            raise ResultFileError(
                f"{source}: annotations: record {i}: field 'image_id': {ann['image_id']!r} is not in 'images'"
            )
        refs[ann["image_id"]].append(ann)
    return refs


def validate_caption_results(data: Any, source: str = "results") -> dict[Hashable, str]:
    """image_id -> generated caption."""
    records = check_records(data, CAPTION_RESULT_FIELDS, source)
    return {iid: r["caption"] for iid, r in index_by_id(records, "image_id", source).items()}
