"""`mixkit eval caption` end to end on a tiny T5 checkpoint and a tiny shapes dataset."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from mixkit.testing import build_tiny_predictor
from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.eval import caption_eval
from mixkit.eval.inputs import EvalInputError
from mixkit.models.blip2.reference import T5_CAPTION

FAST = ["--max-new-tokens", "8", "--min-new-tokens", "2", "--num-beams", "2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-t5")
    build_tiny_predictor(directory, "t5")
    return directory


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> ShapesPaths:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, ShapesConfig(num_train=1, num_val=1, num_test=3, image_size=32))
    return ShapesPaths.under(root)


def caption_argv(checkpoint: Path, shapes: ShapesPaths, out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--records", str(shapes.caption_test), "--image-root", str(shapes.root),
            "--output-dir", str(out), *extra]


def test_end_to_end_scores_against_coco_ground_truth(checkpoint, shapes, tmp_path, capsys):
    out = tmp_path / "out"
    argv = caption_argv(checkpoint, shapes, out, "--gt", str(shapes.caption_gt["test"]), "--batch-size", "2", *FAST)
    assert caption_eval.main(argv) == 0
    results = json.loads((out / "test_caption_result.json").read_text())
    assert [r["image_id"] for r in results] == [0, 1, 2]
    assert all(set(r) == {"image_id", "caption"} and isinstance(r["caption"], str) for r in results)
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out) == metrics
    assert {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(metrics["scores"])
    assert metrics["prompt"] == ""  # the tiny checkpoint names no caption prompt
    assert set(metrics["versions"]) == {"torch", "transformers", "mixkit"}


def test_reference_settings_by_default_and_prompt_override(checkpoint, shapes, tmp_path, capsys):
    out = tmp_path / "out"
    assert caption_eval.main(caption_argv(checkpoint, shapes, out, "--prompt", "a photo of", "--batch-size", "3")) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["scores"] is None and metrics["prompt"] == "a photo of"
    assert metrics["generation"] == asdict(T5_CAPTION)


def test_image_id_from_file_name_when_records_have_none(tmp_path):
    records = [{"image": "val2014/COCO_val2014_000000391895.jpg", "caption": ["a"]},
               {"image": "x/y_7.png", "caption": ["b"], "image_id": 9}]
    units = caption_eval.parse_records(records, tmp_path, "records")
    assert [u.image_id for u in units] == [391895, 9]
    assert units[0].path == tmp_path / "val2014/COCO_val2014_000000391895.jpg"
    with pytest.raises(EvalInputError, match="does not end in _<number>"):
        caption_eval.parse_records([{"image": "cat.jpg"}], tmp_path, "records")


def test_missing_records_file_is_one_line_and_exit_2(checkpoint, tmp_path, capsys):
    argv = ["--model", str(checkpoint), "--records", str(tmp_path / "none.json"), "--image-root", str(tmp_path),
            "--output-dir", str(tmp_path / "out")]
    assert caption_eval.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--records" in err and "\n" not in err
