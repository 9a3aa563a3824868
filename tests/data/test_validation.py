"""Annotation validation: real shapes files pass; each kind of broken file is named precisely."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.validation import (
    AnnotationError,
    add_arguments,
    read_records,
    record_problems,
    run,
    validate_annotations,
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesPaths:
    root = tmp_path_factory.mktemp("shapes")
    return write_shapes_dataset(root, ShapesConfig(num_train=6, num_val=3, num_test=3))


def _write(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records))
    return path


def test_shapes_files_pass_every_kind(shapes: ShapesPaths) -> None:
    cases = [(shapes.caption_train, "caption_train", 30), (shapes.caption_val, "caption_eval", 3),
             (shapes.vqa_train, "vqa_train", None), (shapes.vqa_test, "vqa_eval", None)]
    for path, kind, expected in cases:
        report = validate_annotations(path, kind, shapes.root)
        assert report.ok and report.images_checked
        assert report.num_records == (expected if expected is not None else len(json.loads(path.read_text())))
    # Caption train repeats each of the 6 images once per caption.
    assert validate_annotations(shapes.caption_train, "caption_train", shapes.root).num_images == 6


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"caption": "a cat", "image": "x.jpg"},\n  {"caption": "a dog" "image": "y.jpg"}\n]')
    with pytest.raises(AnnotationError, match=rf"{path}: not valid JSON \(line 3, column \d+"):
        validate_annotations(path, "caption_train", check_images=False)


def test_malformed_json_lines_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"caption": "a", "image": "x.jpg"}\n\n{"caption": oops}\n')
    with pytest.raises(AnnotationError, match=rf"{path}: not valid JSON \(line 3, column \d+"):
        read_records(path)


@pytest.mark.parametrize("name", ["gone.json", "gone.jsonl"])
def test_missing_file_is_an_annotation_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(AnnotationError, match=rf"{tmp_path / name}: file not found"):
        read_records(tmp_path / name)


def test_json_lines_records_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('{"caption": "a", "image": "x.jpg"}\n{"caption": "b", "image": "y.jpg"}\n')
    assert validate_annotations(path, "caption_train", check_images=False).num_records == 2


def test_missing_field_and_wrong_type_are_located(tmp_path: Path) -> None:
    path = _write(tmp_path / "ann.json", [
        {"caption": "fine", "image": "a.jpg"},
        {"image": "b.jpg"},
        {"caption": 3, "image": "c.jpg"},
    ])
    with pytest.raises(AnnotationError) as caught:
        validate_annotations(path, "caption_train", check_images=False)
    message = str(caught.value)
    assert f"{path}: 2 problems in 3 caption_train records" in message
    assert f"{path}:record 1: field 'caption': missing" in message
    assert f"{path}:record 2: field 'caption': expected a string, got int" in message


@pytest.mark.parametrize("record, field, problem", [
    ({"question_id": 1, "question": "q?", "answer": [], "image": "a.jpg"}, "answer", "non-empty list"),
    ({"question_id": 1, "question": "q?", "answer": "yes", "image": "a.jpg"}, "answer", "list of strings"),
    ({"question_id": 1, "question": "q?", "answer": ["yes", 2], "image": "a.jpg"}, "answer", "item 1"),
    ({"question_id": True, "question": "q?", "answer": ["a"], "image": "a.jpg"}, "question_id", "integer"),
    ({"question_id": 1, "question": " ", "answer": ["a"], "image": "a.jpg"}, "question", "empty"),
])
def test_vqa_train_field_rules(record: dict, field: str, problem: str) -> None:
    problems = record_problems(record, "vqa_train")
    assert len(problems) == 1 and problems[0][0] == field and problem in problems[0][1]


def test_caption_eval_needs_a_list_of_references() -> None:
    assert record_problems({"caption": ["a", "b"], "image": "x.jpg"}, "caption_eval") == []
    assert record_problems({"caption": "a", "image": "x.jpg"}, "caption_eval")[0][0] == "caption"
    assert record_problems(["not", "a", "dict"], "caption_eval")[0][0] is None


def test_duplicate_question_ids(tmp_path: Path) -> None:
    record = {"question": "q?", "image": "a.jpg"}
    path = _write(tmp_path / "q.json", [{**record, "question_id": 7}, {**record, "question_id": 8},
                                         {**record, "question_id": 7}])
    with pytest.raises(AnnotationError, match=r"record 2: field 'question_id': duplicate id 7 \(first at record 0\)"):
        validate_annotations(path, "vqa_eval", check_images=False)


def test_missing_images_listed_with_record_numbers_and_capped(tmp_path: Path, shapes: ShapesPaths) -> None:
    records = json.loads(shapes.caption_val.read_text())
    records += [{"caption": ["x"], "image": f"images/val/gone_{i}.jpg"} for i in range(7)]
    path = _write(tmp_path / "val.json", records)
    with pytest.raises(AnnotationError) as caught:
        validate_annotations(path, "caption_eval", shapes.root, max_listed=5)
    message = str(caught.value)
    assert "(7 missing images)" in message
    assert f"{path}:record 3: field 'image': file not found: {shapes.root / 'images/val/gone_0.jpg'}" in message
    assert "gone_4.jpg" in message and "gone_5.jpg" not in message
    assert "... and 2 more" in message


def test_cli_run_returns_0_or_2(tmp_path: Path, shapes: ShapesPaths, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--kind", "vqa_train", "--annotations", str(shapes.vqa_train),
                              "--image-root", str(shapes.root)])
    assert run(args) == 0
    assert "vqa_train records" in capsys.readouterr().out
    bad = _write(tmp_path / "bad.json", [{"caption": "a"}])
    args = parser.parse_args(["--kind", "caption_train", "--annotations", str(bad), "--no-check-images"])
    assert run(args) == 2
    assert "record 0: field 'image': missing" in capsys.readouterr().out
