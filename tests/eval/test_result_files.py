"""Result and ground-truth file validation: one-line errors naming file, record and field."""

from __future__ import annotations

import pytest

from mixkit.eval import result_files as rf
from mixkit.eval.result_files import ResultFileError


def expect_error(match: str, func, *args, **kwargs) -> str:
    with pytest.raises(ResultFileError, match=match) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_not_json(tmp_path) -> None:
    path = tmp_path / "r.json"
    path.write_text('[{"question_id": 1,')
    message = expect_error("not valid JSON", rf.load_json, path)
    assert message.startswith(str(path))
    expect_error("file not found", rf.load_json, tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"question_id": 1}, "R: expected a list of records, got object"),
        (["x"], "R: record 0: expected an object, got string"),
        ([{"question_id": 1, "answer": "a"}, {"answer": "b"}], "R: record 1: missing field 'question_id'"),
        ([{"question_id": "1", "answer": None}], "R: record 0: field 'answer' must be str, got null"),
        ([{"question_id": True, "answer": "a"}], "R: record 0: field 'question_id' must be int or str, got boolean"),
        ([{"question_id": 1.5, "answer": "a"}], "R: record 0: field 'question_id' must be int or str, got float"),
        (
            [{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"}, {"question_id": 1, "answer": "c"}],
            r"R: record 2: field 'question_id': duplicate id 1 \(first in record 0\)",
        ),
    ],
)
def test_vqa_results_errors(data, match: str) -> None:
    expect_error(match, rf.validate_vqa_results, data, "R")


def annotation(qid: int, answers: list[dict] | None = None) -> dict:
    if answers is None:
        answers = [{"answer": "yes", "answer_confidence": "yes", "answer_id": j} for j in range(1, 11)]
    return {"question_id": qid, "image_id": 1, "question_type": "is", "answer_type": "yes/no",
            "multiple_choice_answer": "yes", "answers": answers}  # fmt: skip


def test_vqa_annotation_errors() -> None:
    expect_error("A: expected an object with key 'annotations', got list", rf.validate_vqa_annotations, [], "A")
    expect_error("A: missing top-level key 'annotations'", rf.validate_vqa_annotations, {}, "A")
    bad_answer = annotation(7, [{"answer": "yes", "answer_confidence": "yes"}])
    expect_error(
        r"A: annotations: record 1: answers\[0\]: missing field 'answer_id'",
        rf.validate_vqa_annotations, {"annotations": [annotation(6), bad_answer]}, "A",
    )  # fmt: skip
    empty = {"annotations": [annotation(1, [])]}
    expect_error("record 0: field 'answers' is empty", rf.validate_vqa_annotations, empty)
    duplicate = annotation(1)
    duplicate["answers"][3]["answer_id"] = 1
    message = r"answers\[3\]: field 'answer_id': duplicate id 1"
    expect_error(message, rf.validate_vqa_annotations, {"annotations": [duplicate]})


def test_questions_must_match_annotations() -> None:
    questions = rf.validate_vqa_questions({"questions": [{"question_id": 1, "image_id": 1, "question": "?"}]})
    annotations = rf.validate_vqa_annotations({"annotations": [annotation(2)]})
    expect_error("1 question_id.*without an annotation", rf.check_questions_match, questions, annotations)


def test_match_ids() -> None:
    message = expect_error(
        "R: ", rf.match_ids, [1, 2, 99], list(range(1, 11)), allow_partial=False, source="R", id_name="question_id"
    )
    assert "1 question_id(s) not in the ground truth (99)" in message
    assert "8 ground-truth question_id(s) without a result (3, 4, 5, 6, 7, ...)" in message
    ids, coverage = rf.match_ids([9, 2, 1], [1, 2, 3], allow_partial=True, source="R", id_name="question_id")
    assert ids == [1, 2]  # ground-truth order; the extra id is ignored
    assert coverage.to_json() == {"scored": 2, "total": 3}
    expect_error("no image_id in common", rf.match_ids, [9], [1], allow_partial=True, source="R", id_name="image_id")


def test_caption_files() -> None:
    captions = [{"image_id": 2, "caption": "b"}, {"image_id": 1, "caption": "a"}]
    truth = {"images": [{"id": 1}, {"id": 2}], "annotations": captions}
    assert rf.validate_caption_truth(truth) == {1: [truth["annotations"][1]], 2: [truth["annotations"][0]]}
    truth["annotations"].append({"image_id": 3, "caption": "c"})
    message = "G: annotations: record 2: field 'image_id': 3 is not in 'images'"
    expect_error(message, rf.validate_caption_truth, truth, "G")
    expect_error("R: record 0: missing field 'caption'", rf.validate_caption_results, [{"image_id": 1}], "R")
