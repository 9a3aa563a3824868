"""`mixkit eval vqa` end to end on a tiny OPT checkpoint and a tiny shapes dataset."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from mixkit.pipelines.blip2 import Blip2Pipeline
from mixkit.testing import build_tiny_predictor
from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.transforms import load_image
from mixkit.eval import vqa_eval
from mixkit.eval.config import VqaEvalConfig
from mixkit.utils.typed_args import parse_config
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.reference import OPT_VQA

PATTERN = "images/val/shapes_val_{image_id:06d}.jpg"
FAST = ["--max-new-tokens", "3", "--num-beams", "2"]  # keeps the runs that do not check defaults quick


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-opt")
    build_tiny_predictor(directory, "opt")
    return directory


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> ShapesPaths:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, ShapesConfig(num_train=1, num_val=3, num_test=1, image_size=32))
    return ShapesPaths.under(root)


def vqa_argv(checkpoint: Path, shapes: ShapesPaths, out: Path, *extra: str, annotations: bool = True) -> list[str]:
    argv = ["--model", str(checkpoint), "--questions", str(shapes.vqa_questions["val"]),
            "--image-root", str(shapes.root), "--image-pattern", PATTERN, "--output-dir", str(out)]
    if annotations:
        argv += ["--annotations", str(shapes.vqa_annotations["val"])]
    return argv + list(extra)


def questions_of(shapes: ShapesPaths) -> list[dict]:
    return json.loads(shapes.vqa_questions["val"].read_text())["questions"]


@pytest.fixture
def counting(monkeypatch) -> dict[str, int]:
    """Counts images through the image encoder and calls of generate (class-level wraps)."""
    counts = {"images": 0, "encode_calls": 0, "generate": 0}
    encode, generate = Blip2Model.encode_image, Blip2Model.generate

    def counted_encode(self, pixel_values):
        counts["images"] += pixel_values.shape[0]
        counts["encode_calls"] += 1
        return encode(self, pixel_values)

    def counted_generate(self, *args, **kwargs):
        counts["generate"] += 1
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(Blip2Model, "encode_image", counted_encode)
    monkeypatch.setattr(Blip2Model, "generate", counted_generate)
    return counts


def test_end_to_end_official_format_and_metrics(checkpoint, shapes, tmp_path, capsys, counting):
    out = tmp_path / "out"
    assert vqa_eval.main(vqa_argv(checkpoint, shapes, out, "--batch-size", "2")) == 0
    results = json.loads((out / "val_vqa_result.json").read_text())
    asked = sorted(q["question_id"] for q in questions_of(shapes))
    assert [r["question_id"] for r in results] == asked
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["answer"], str) for r in results)
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out) == metrics  # stdout carries the metrics JSON
    assert set(metrics["scores"]) == {"overall", "perQuestionType", "perAnswerType"}
    assert metrics["generation"] == asdict(OPT_VQA)  # the reference settings by default
    assert metrics["prompts"][0] == "Question: " + questions_of(shapes)[0]["question"] + " Short answer:"
    assert len(metrics["prompts"]) == 3 and set(metrics["versions"]) == {"torch", "transformers", "mixkit"}
    # Each image is encoded once, however many questions it has.
    assert counting["images"] == len({q["image_id"] for q in questions_of(shapes)})


def test_cached_image_embeddings_give_the_predictors_answers(checkpoint, shapes, tmp_path):
    out = tmp_path / "out"
    assert vqa_eval.main(vqa_argv(checkpoint, shapes, out, "--batch-size", "1", *FAST)) == 0
    answers = {r["question_id"]: r["answer"] for r in json.loads((out / "val_vqa_result.json").read_text())}
    predictor = Blip2Pipeline.from_pretrained(str(checkpoint))
    settings = vqa_eval_config(FAST).apply(predictor.settings.vqa)
    questions = questions_of(shapes)[:4]
    images = [load_image(shapes.root / PATTERN.format(image_id=q["image_id"])) for q in questions]
    expected = predictor.answer(images, [q["question"] for q in questions], settings=settings, batch_size=1)
    assert [answers[q["question_id"]] for q in questions] == expected


def vqa_eval_config(extra: list[str]) -> VqaEvalConfig:
    """What `mixkit eval vqa` builds from its command line."""
    argv = ["--model", "m", "--questions", "q", "--image-root", ".", "--output-dir", "o", *extra]
    return parse_config(VqaEvalConfig, argv, "mixkit eval vqa", "")


def test_resume_skips_answered_questions(checkpoint, shapes, tmp_path, counting):
    out = tmp_path / "out"
    argv = vqa_argv(checkpoint, shapes, out, "--batch-size", "1", *FAST)
    assert vqa_eval.main(argv) == 0
    first = (out / "val_vqa_result.json").read_bytes()
    partial = out / "partial" / "rank0.jsonl"
    lines = partial.read_text().splitlines()
    assert len(lines) == len(questions_of(shapes))
    partial.write_text("\n".join(lines[:7]) + "\n" + lines[7][:10])  # as if killed mid-write
    counting["generate"] = 0
    assert vqa_eval.main(argv + ["--resume"]) == 0
    assert counting["generate"] == len(lines) - 7  # batch size 1: one generate call per question
    assert (out / "val_vqa_result.json").read_bytes() == first


def test_without_annotations_writes_results_and_no_scores(checkpoint, shapes, tmp_path, capsys):
    out = tmp_path / "out"
    argv = vqa_argv(checkpoint, shapes, out, "--split", "test-dev", *FAST, annotations=False)
    assert vqa_eval.main(argv) == 0
    assert len(json.loads((out / "test-dev_vqa_result.json").read_text())) == len(questions_of(shapes))
    assert json.loads(capsys.readouterr().out)["scores"] is None


@pytest.mark.parametrize("change, message", [
    (["--questions", "/nonexistent.json"], "file not found"),
    (["--image-pattern", "nowhere/{image_id:06d}.jpg"], "image file(s) not found"),
    (["--image-pattern", "{image_id:s}"], "does not fit image_id"),
    (["--num-beams", "0"], "--num-beams"),
])
def test_bad_input_is_one_line_and_exit_2(checkpoint, shapes, tmp_path, capsys, change, message):
    assert vqa_eval.main(vqa_argv(checkpoint, shapes, tmp_path / "out") + change) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_questions_and_annotations_are_validated_once(checkpoint, shapes, tmp_path, monkeypatch):
    """The inputs are checked before generation; scoring reuses the checked annotations instead of
    validating the files a second time."""
    from mixkit.eval import result_files

    calls = {"questions": 0, "annotations": 0}
    for kind in calls:
        original = getattr(result_files, f"validate_vqa_{kind}")

        def counted(*args, _original=original, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(result_files, f"validate_vqa_{kind}", counted)
    assert vqa_eval.main(vqa_argv(checkpoint, shapes, tmp_path / "out", *FAST)) == 0
    assert calls == {"questions": 1, "annotations": 1}
