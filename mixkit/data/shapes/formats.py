"""Written examples -> the real datasets' records: LAVIS COCO-Karpathy captions, the COCO caption ground
truth pycocotools reads, the official VQAv2 question/annotation files and LAVIS's VQA records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixkit.data.shapes.config import QUESTIONS_PER_IMAGE_LIMIT
from mixkit.data.shapes.scenes import Scene
from mixkit.data.shapes.text import Question

INFO: dict[str, str] = {
    "description": "mixkit synthetic shapes", "version": "1.0",
    "contributor": "mixkit.data.shapes", "url": "", "year": "", "date_created": "",
}
LICENSE: dict[str, str] = {"name": "CC0-1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}


@dataclass(frozen=True)
class Example:
    """One written image with its scene, captions and questions."""

    split: str
    image_id: int
    image: str  # path relative to the dataset root
    scene: Scene
    captions: list[str]
    questions: list[Question]


def karpathy_train_records(examples: list[Example]) -> list[dict[str, Any]]:
    """LAVIS coco_karpathy_train.json: one record per caption."""
    return [{"caption": c, "image": e.image, "image_id": f"shapes_{e.image_id}"}
            for e in examples for c in e.captions]


def karpathy_eval_records(examples: list[Example]) -> list[dict[str, Any]]:
    """LAVIS coco_karpathy_{val,test}.json: one record per image with all references."""
    return [{"caption": e.captions, "image": e.image, "image_id": e.image_id} for e in examples]


def coco_caption_gt(examples: list[Example]) -> dict[str, Any]:
    """COCO captions ground truth, as pycocotools' COCO (and pycocoevalcap) reads it."""
    images = [{"id": e.image_id, "file_name": e.image} for e in examples]
    annotations = [
        {"image_id": e.image_id, "id": e.image_id * len(e.captions) + j, "caption": c}
        for e in examples for j, c in enumerate(e.captions)
    ]
    return {"images": images, "annotations": annotations, "info": INFO,
            "licenses": [], "type": "captions"}


def question_id(image_id: int, k: int) -> int:
    return image_id * QUESTIONS_PER_IMAGE_LIMIT + k


def vqa_questions_file(examples: list[Example], split: str) -> dict[str, Any]:
    """VQAv2 official questions file (v2_OpenEnded_mscoco_*_questions.json)."""
    questions = [{"question_id": question_id(e.image_id, k), "image_id": e.image_id,
                  "question": q.question}
                 for e in examples for k, q in enumerate(e.questions)]
    return {"info": INFO, "task_type": "Open-Ended", "data_type": "shapes",
            "data_subtype": split, "license": LICENSE, "questions": questions}


def vqa_annotations_file(examples: list[Example], split: str) -> dict[str, Any]:
    """VQAv2 official annotations file (v2_mscoco_*_annotations.json)."""
    annotations = [_vqa_annotation(e, k, q) for e in examples for k, q in enumerate(e.questions)]
    return {"info": INFO, "data_type": "shapes", "data_subtype": split,
            "license": LICENSE, "annotations": annotations}


def _vqa_annotation(example: Example, k: int, q: Question) -> dict[str, Any]:
    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
               for i, a in enumerate(q.answers)]
    return {"question_id": question_id(example.image_id, k), "image_id": example.image_id,
            "question_type": q.question_type, "answer_type": q.answer_type,
            "multiple_choice_answer": q.answer, "answers": answers}


def lavis_vqa_records(examples: list[Example]) -> list[dict[str, Any]]:
    """LAVIS vqa_train.json / vqa_val_eval.json records (answers kept for eval too)."""
    return [{"question_id": question_id(e.image_id, k), "question": q.question,
             "answer": list(q.answers), "image": e.image, "dataset": "vqa"}
            for e in examples for k, q in enumerate(e.questions)]
