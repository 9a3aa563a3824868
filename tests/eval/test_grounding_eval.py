"""`mixkit eval grounding` on RefCOCO-format files written from the shapes data (exact boxes): an oracle that
answers the true box text scores 100, wrong or non-box answers score 0, and a tiny MiniGPT-v2 runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.data.shapes.grounding import write_refcoco_file
from mixkit.eval.config import GroundingEvalConfig
from mixkit.eval.grounding_eval import evaluate_grounding, score_answer
from mixkit.models.minigpt4.boxes import format_box
from mixkit.models.settings import PredictionSettings, GenerationSettings
from mixkit.testing import build_tiny_minigpt4

SHAPES = ShapesConfig(num_train=1, num_val=4, num_test=1, image_size=64, captions_per_image=1)


@pytest.fixture(scope="module")
def refcoco(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, SHAPES)
    return root, write_refcoco_file(root, SHAPES, "val")


class AnsweringPipeline:
    """Answers each expression with `answer(record)`; stands in for a model in the scoring tests."""

    settings = PredictionSettings("", "{}", GenerationSettings(1, 20, 0, 1.0), GenerationSettings(1, 20, 0, 1.0))

    def __init__(self, records: list[dict], answer):
        self.by_sentence = {record["sents"]: record for record in records}
        self.answer = answer

    def ground(self, images, expressions, settings, batch_size, prompt_template):
        assert prompt_template == "[refer] give me the location of {}"
        return [self.answer(self.by_sentence[expression]) for expression in expressions]


def true_box(record: dict) -> str:
    x, y, w, h = record["bbox"]
    return format_box((x, y, x + w, y + h), record["width"], record["height"])


@pytest.mark.parametrize("answer, expected", [
    (true_box, 100.0),
    (lambda record: "{<0><0><1><1>}", 0.0),  # a box far from every shape
    (lambda record: "a " + true_box(record), 0.0),  # eval_ref.py: the answer must start with the box
])
def test_accuracy_from_parsed_boxes(refcoco, tmp_path, monkeypatch, answer, expected) -> None:
    root, annotations = refcoco
    records = json.loads(annotations.read_text())
    assert len(records) >= 4 and all(r["bbox"][2] > 0 for r in records)
    monkeypatch.setattr("mixkit.pipelines.auto.load_pipeline", lambda *a, **k: AnsweringPipeline(records, answer))
    config = GroundingEvalConfig(model="stub", annotations=annotations, image_root=root, output_dir=tmp_path)
    metrics = evaluate_grounding(config)
    assert metrics["accuracy"] == expected and metrics["num_records"] == len(records)
    rows = json.loads((tmp_path / "val_grounding_result.json").read_text())
    assert [row["index"] for row in rows] == list(range(len(records)))


def test_iou_rule_of_the_official_script() -> None:
    record = {"bbox": [10.0, 10.0, 20.0, 20.0], "width": 100, "height": 100}
    assert score_answer("{<10><10><30><30>}", record, 0.5)["correct"]
    half = score_answer("{<10><10><20><30>}", record, 0.5)  # about half the box: (11 x 21) / (21 x 21) pixels
    assert half["iou"] == pytest.approx(11 / 21) and half["correct"]
    assert score_answer("no box", record, 0.5) == {"box": None, "iou": None, "correct": False}


def test_grounding_command_runs_a_tiny_minigptv2(refcoco, tmp_path, capsys) -> None:
    root, annotations = refcoco
    build_tiny_minigpt4(tmp_path / "model", "minigptv2", image_size=64)
    code = main(["eval", "grounding", "--model", str(tmp_path / "model"), "--annotations", str(annotations),
                 "--image-root", str(root), "--output-dir", str(tmp_path / "out"), "--max-new-tokens", "6"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "grounding" and metrics["generation"]["max_new_tokens"] == 6
    assert 0.0 <= metrics["accuracy"] <= 100.0
    code = main(["eval", "grounding", "--model", str(tmp_path / "model"), "--annotations", str(tmp_path / "none.json"),
                 "--image-root", str(root), "--output-dir", str(tmp_path / "out2")])
    assert code == 2 and "--annotations" in capsys.readouterr().err
