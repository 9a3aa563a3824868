"""Prediction: batched equals one at a time; the CLI's JSON shape and its errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mixkit.pipelines.blip2 import Blip2Pipeline
from mixkit.testing import build_tiny_predictor
from mixkit.cli import main
from mixkit.models.settings import GenerationSettings


@pytest.fixture(scope="module", params=["opt", "t5"])
def checkpoint(request, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp(f"tiny-{request.param}")
    build_tiny_predictor(directory, request.param)
    return directory



QUESTIONS = ["what color is the circle?", "is there a large red square on the left of the image?", "how many?"]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_equals_one_at_a_time(checkpoint: Path, images: list[Path], num_beams: int) -> None:
    predictor = Blip2Pipeline.from_pretrained(str(checkpoint))
    pictures = [Image.open(path).convert("RGB") for path in images]
    settings = GenerationSettings(num_beams=num_beams, max_new_tokens=6, min_new_tokens=2, length_penalty=1.0)
    batched = predictor.answer(pictures, QUESTIONS, settings=settings, batch_size=3)
    single = [predictor.answer([p], [q], settings=settings)[0] for p, q in zip(pictures, QUESTIONS)]
    assert batched == single
    assert len(set(batched)) > 1, "all answers equal: the comparison would be weak"
    captions = predictor.caption(pictures, prompt="a large", settings=settings, batch_size=3)
    assert captions == [predictor.caption([p], prompt="a large", settings=settings)[0] for p in pictures]


def test_cli_json_output(checkpoint: Path, images: list[Path], capsys) -> None:
    code = main(["predict", "vqa", "--model", str(checkpoint), "--image", *map(str, images[:2]),
                 "--question", "what color is it?", "--json", "--max-new-tokens", "4"])
    assert code == 0
    records = json.loads(capsys.readouterr().out)
    assert [set(r) for r in records] == [{"image", "question", "answer"}] * 2
    assert [r["image"] for r in records] == [str(p) for p in images[:2]]
    assert all(r["question"] == "what color is it?" and isinstance(r["answer"], str) for r in records)
    code = main(["predict", "caption", "--model", str(checkpoint), "--image", str(images[0]), "--json",
                 "--num-beams", "2", "--max-new-tokens", "3"])
    assert code == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert set(record) == {"image", "caption"} and record["caption"]


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_bad_inputs_exit_2_naming_the_input(checkpoint: Path, images: list[Path], tmp_path: Path, capsys) -> None:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(images[2].read_bytes()[:200])
    missing = tmp_path / "missing.png"
    for bad in (missing, not_image, truncated):
        assert main(["predict", "caption", "--model", str(checkpoint), "--image", str(bad)]) == 2
        assert str(bad) in _error_line(capsys)
    assert main(["predict", "vqa", "--model", str(checkpoint), "--image", str(images[0]), "--question", "  "]) == 2
    assert "question" in _error_line(capsys)
    assert main(["predict", "caption", "--model", "blip2-caption-opt2_7b", "--image", str(images[0])]) == 2
    assert "blip2-caption-opt2.7b" in _error_line(capsys)


def test_several_questions_about_one_image_encode_it_once(checkpoint, images, capsys, monkeypatch) -> None:
    from mixkit.models.blip2.modeling import Blip2Model

    encoded: list[int] = []
    encode = Blip2Model.encode_image
    monkeypatch.setattr(Blip2Model, "encode_image",
                        lambda self, pixels: encoded.append(len(pixels)) or encode(self, pixels))
    argv = ["predict", "vqa", "--model", str(checkpoint), "--image", str(images[0]), "--question", *QUESTIONS,
            "--json", "--max-new-tokens", "3", "--num-beams", "2"]
    assert main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["question"] for r in records] == QUESTIONS and {r["image"] for r in records} == {str(images[0])}
    assert encoded == [1]
    # The same answers as asking each question on its own.
    for record, question in zip(records, QUESTIONS):
        assert main(["predict", "vqa", "--model", str(checkpoint), "--image", str(images[0]), "--question", question,
                     "--json", "--max-new-tokens", "3", "--num-beams", "2"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["answer"] == record["answer"]
    two_images = ["--image", str(images[0]), str(images[1])]
    assert main(["predict", "vqa", "--model", str(checkpoint), *two_images, "--question", *QUESTIONS]) == 2
    assert "3 questions for 2 images" in capsys.readouterr().err
