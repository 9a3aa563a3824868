"""`mixkit eval vqa` and `mixkit eval caption` on tiny MiniGPT-4 (Vicuna v0) and MiniGPT-v2 checkpoints and the
shapes data: the result files hold exactly what the pipeline's `answer_grouped` / `caption` give for the same
images with the reference prompts (MiniGPT-4: the question as the chat message and the first line of
prompts/alignment.txt; MiniGPT-v2: its `[vqa]` / `[caption]` task prompts; see mixkit/models/minigpt4/templates.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.models.minigpt4.templates import (MINIGPT4_CAPTION_PROMPT, MINIGPT4_VQA_PROMPT, V2_CAPTION_PROMPT,
                                              V2_VQA_PROMPT)
from mixkit.pipelines.auto import load_pipeline
from mixkit.testing import build_tiny_minigpt4

PATTERN = "images/val/shapes_val_{image_id:06d}.jpg"
NEW_TOKENS = 4
FAST = ["--num-beams", "1", "--max-new-tokens", str(NEW_TOKENS), "--min-new-tokens", str(NEW_TOKENS)]
REFERENCE_PROMPTS = {"vicuna0": (MINIGPT4_VQA_PROMPT, MINIGPT4_CAPTION_PROMPT),
                     "minigptv2": (V2_VQA_PROMPT, V2_CAPTION_PROMPT)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> ShapesPaths:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, ShapesConfig(num_train=1, num_val=2, num_test=3, image_size=32))
    return ShapesPaths.under(root)


@pytest.fixture(scope="module", params=["vicuna0", "minigptv2"])
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    directory = tmp_path_factory.mktemp(request.param)
    build_tiny_minigpt4(directory, request.param)
    return request.param, directory


def test_eval_vqa_answers_are_the_pipelines(checkpoint, shapes, tmp_path, capsys) -> None:
    variant, folder = checkpoint
    out = tmp_path / "vqa"
    assert main(["eval", "vqa", "--model", str(folder), "--questions", str(shapes.vqa_questions["val"]),
                 "--annotations", str(shapes.vqa_annotations["val"]), "--image-root", str(shapes.root),
                 "--image-pattern", PATTERN, "--output-dir", str(out), *FAST]) == 0
    metrics = json.loads(capsys.readouterr().out)
    results = {r["question_id"]: r["answer"] for r in json.loads((out / "val_vqa_result.json").read_text())}
    questions = json.loads(shapes.vqa_questions["val"].read_text())["questions"]
    assert sorted(results) == sorted(q["question_id"] for q in questions)
    template = REFERENCE_PROMPTS[variant][0]
    assert metrics["prompt_template"] == template
    assert metrics["prompts"][0] == template.format(questions[0]["question"])

    pipeline = load_pipeline(str(folder), task="vqa")
    settings = pipeline.settings.vqa.with_overrides(num_beams=1, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    image_ids = sorted({q["image_id"] for q in questions})
    asked = [[q for q in questions if q["image_id"] == image_id] for image_id in image_ids]
    images = [shapes.root / PATTERN.format(image_id=image_id) for image_id in image_ids]
    expected = pipeline.answer_grouped(images, [[q["question"] for q in group] for group in asked], settings,
                                       prompt_template=template)
    for group, answers in zip(asked, expected):
        assert [results[q["question_id"]] for q in group] == answers
    assert len({answer for answers in expected for answer in answers}) > 1, "answers must differ to mean something"


def test_eval_caption_captions_are_the_pipelines(checkpoint, shapes, tmp_path, capsys) -> None:
    variant, folder = checkpoint
    out = tmp_path / "caption"
    assert main(["eval", "caption", "--model", str(folder), "--records", str(shapes.caption_test),
                 "--image-root", str(shapes.root), "--output-dir", str(out), *FAST]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["prompt"] == REFERENCE_PROMPTS[variant][1]
    results = json.loads((out / "test_caption_result.json").read_text())
    records = json.loads(shapes.caption_test.read_text())
    assert [r["image_id"] for r in results] == [record["image_id"] for record in records]

    pipeline = load_pipeline(str(folder), task="caption")
    settings = pipeline.settings.caption.with_overrides(num_beams=1, max_new_tokens=NEW_TOKENS,
                                                        min_new_tokens=NEW_TOKENS)
    expected = pipeline.caption([shapes.root / record["image"] for record in records], REFERENCE_PROMPTS[variant][1],
                                settings)
    assert [r["caption"] for r in results] == expected
    assert len(set(expected)) > 1, "captions must differ across images to mean something"
