"""Held-out evaluation of the demo's checkpoint with the official scorers, the two "no image" baselines
scored the same way, and a few examples predicted for the report."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mixkit.data.shapes import (
    ShapesPaths, most_frequent_answer_by_question_type, most_frequent_caption, question_type_of,
)
from mixkit.data.transforms import load_image
from mixkit.eval.caption_eval import evaluate_caption
from mixkit.eval.caption_score import score_captions
from mixkit.eval.config import CaptionEvalConfig, VqaEvalConfig
from mixkit.eval.vqa_eval import evaluate_vqa
from mixkit.eval.vqa_score import score_vqa
from mixkit.pipelines.blip2 import Blip2Pipeline
from mixkit.utils.io import read_json, write_json


def eval_configs(model_dir: Path, output_dir: Path, paths: ShapesPaths) -> dict[str, Any]:
    """What `mixkit eval vqa|caption` would run, for the held-out test split."""
    common = dict(model=str(model_dir), batch_size=50, save_every=100, device="cpu", fp32=True, split="test")
    return {
        "vqa": VqaEvalConfig(**common, output_dir=output_dir / "vqa", questions=paths.vqa_questions["test"],
                             annotations=paths.vqa_annotations["test"], image_root=paths.root,
                             image_pattern="images/test/shapes_test_{image_id:06d}.jpg"),
        "caption": CaptionEvalConfig(**common, output_dir=output_dir / "caption", records=paths.caption_test,
                                     image_root=paths.root, gt=paths.caption_gt["test"]),
    }


def evaluate_model(model_dir: Path, output_dir: Path, paths: ShapesPaths) -> dict[str, dict]:
    """Both end-to-end evaluations; each writes its official result file and metrics.json."""
    configs = eval_configs(model_dir, output_dir, paths)
    return {"vqa": evaluate_vqa(configs["vqa"]), "caption": evaluate_caption(configs["caption"])}


def baseline_results(paths: ShapesPaths) -> tuple[list[dict], list[dict], str]:
    """The baselines' result files: the prior answer of each question's type; one caption for every image."""
    prior = most_frequent_answer_by_question_type(read_json(paths.vqa_train))
    questions = read_json(paths.vqa_questions["test"])["questions"]
    vqa = [{"question_id": q["question_id"], "answer": prior.get(question_type_of(q["question"]), "yes")}
           for q in questions]
    caption = most_frequent_caption(read_json(paths.caption_train))
    images = read_json(paths.caption_gt["test"])["images"]
    return vqa, [{"image_id": image["id"], "caption": caption} for image in images], caption


def baseline_scores(paths: ShapesPaths, output_dir: Path) -> dict[str, Any]:
    """The two "no image" baselines, written and scored like the model's results."""
    vqa, captions, caption = baseline_results(paths)
    write_json(output_dir / "test_vqa_result.json", vqa)
    write_json(output_dir / "test_caption_result.json", captions)
    questions, annotations = read_json(paths.vqa_questions["test"]), read_json(paths.vqa_annotations["test"])
    return {"vqa": score_vqa(questions, annotations, vqa).to_json(),
            "caption": score_captions(read_json(paths.caption_gt["test"]), captions), "caption_text": caption}


def predict_example(pipeline: Blip2Pipeline, root: Path, record: dict[str, Any], asked: list[dict[str, Any]],
                    truth: dict[int, str]) -> dict[str, Any]:
    """One test image's caption and answers beside its references."""
    image = load_image(root / record["image"])
    answers = pipeline.answer_grouped([image], [[q["question"] for q in asked]])[0]
    return {
        "caption": pipeline.caption([image])[0], "references": record["caption"],
        "qa": [{"question": q["question"], "answer": a, "truth": truth[q["question_id"]]}
               for q, a in zip(asked, answers)],
    }


def predict_examples(pipeline: Blip2Pipeline, paths: ShapesPaths, count: int,
                     image_dir: Path) -> list[dict[str, Any]]:
    """Caption and answer every question of the first `count` test images; copies the images into
    `image_dir` (the examples name them relative to its parent, where the report goes)."""
    questions = read_json(paths.vqa_questions["test"])["questions"]
    truth = {a["question_id"]: a["multiple_choice_answer"]
             for a in read_json(paths.vqa_annotations["test"])["annotations"]}
    image_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for record in read_json(paths.caption_test)[:count]:
        asked = [q for q in questions if q["image_id"] == record["image_id"]]
        name = Path(record["image"]).name
        shutil.copyfile(paths.root / record["image"], image_dir / name)
        examples.append({"image": f"{image_dir.name}/{name}",
                         **predict_example(pipeline, paths.root, record, asked, truth)})
    return examples
