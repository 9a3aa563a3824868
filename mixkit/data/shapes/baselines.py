"""The two "no image" baselines: the most frequent answer per question type, the most frequent caption."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from mixkit.data.shapes.config import QUESTION_TYPES


def question_type_of(question: str) -> str:
    """The longest known VQAv2-style prefix of `question`, else its first two words."""
    text = question.lower().strip()
    known = [t for t in QUESTION_TYPES if text.startswith(t)]
    return max(known, key=len) if known else " ".join(text.split()[:2])


def most_frequent(values: Iterable[str]) -> str:
    """Most common value; ties go to the alphabetically first so results are stable."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def most_frequent_answer_by_question_type(train_vqa_records: list[dict[str, Any]]) -> dict[str, str]:
    """The "prior" VQA baseline: per question type, the most common majority answer."""
    majority: dict[str, list[str]] = {}
    for record in train_vqa_records:
        qtype = question_type_of(record["question"])
        majority.setdefault(qtype, []).append(most_frequent(record["answer"]))
    return {qtype: most_frequent(answers) for qtype, answers in sorted(majority.items())}


def most_frequent_caption(train_caption_records: list[dict[str, Any]]) -> str:
    """The "say the same thing for every image" captioning baseline."""
    return most_frequent(record["caption"] for record in train_caption_records)
