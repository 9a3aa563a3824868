"""The true text about a scene: captions from templates, and VQAv2-style questions with 10 annotator answers."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from mixkit.data.shapes.config import (
    CAPTION_TEMPLATES, COUNT_WORDS, KINDS, MAX_SHAPES_LIMIT, NOISY_QUESTION_RATE, NUM_ANSWERS, PLURALS,
    POSITIONS, SHAPE_COLOURS, check,
)
from mixkit.data.shapes.scenes import Scene, Shape


@dataclass(frozen=True)
class Question:
    question: str
    question_type: str
    answer_type: str  # "yes/no", "number" or "other", as in VQAv2
    answer: str
    answers: tuple[str, ...]  # NUM_ANSWERS annotator answers, mostly `answer`


# ------------------------------------------------------------------------- captions


def scene_captions(scene: Scene, rng: random.Random, num: int = 5) -> list[str]:
    """`num` true captions from distinct templates, in random template order."""
    check(1 <= num <= CAPTION_TEMPLATES, f"num must be in 1..{CAPTION_TEMPLATES}")
    templates = rng.sample(range(CAPTION_TEMPLATES), num)
    return [_caption(scene, template, rng) for template in templates]


def _caption(scene: Scene, template: int, rng: random.Random) -> str:
    shapes = scene.shapes
    any_shape = rng.choice(shapes)
    captions = [
        f"{_listing(shapes, sized=False)} on a {scene.background} background",
        f"{_count_phrase(len(shapes))}: "
        + _join([f"{_noun(s, sized=True)} {_where(s)}" for s in shapes]),
        f"there is {_noun(any_shape, sized=False)}",
        f"a picture of {_listing(shapes, sized=False)}",
        f"a {scene.background} background with {_count_phrase(len(shapes))}",
        _listing(shapes, sized=True),
        f"{_noun(any_shape, sized=True)} {_where(any_shape)}",
    ]
    return captions[template]


def _noun(shape: Shape, sized: bool) -> str:
    words = f"{shape.size} {shape.colour} {shape.kind}" if sized else f"{shape.colour} {shape.kind}"
    return ("an " if words[0] in "aeiou" else "a ") + words


def _listing(shapes: Iterable[Shape], sized: bool) -> str:
    return _join([_noun(s, sized) for s in shapes])


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(count: int) -> str:
    return f"{COUNT_WORDS[count]} shape" + ("" if count == 1 else "s")


def _where(shape: Shape) -> str:
    """The position as a prepositional phrase: "on the left", "at the top right"."""
    if shape.position == "center":
        return "in the center"
    return ("on the " if shape.position in ("left", "right") else "at the ") + shape.position


def caption_words(text: str) -> list[str]:
    """The words of a caption/question/answer, as the vocabulary counts them."""
    return re.findall(r"[a-z0-9]+", text.lower())


# ------------------------------------------------------------------------ questions


def scene_questions(scene: Scene, rng: random.Random) -> list[Question]:
    """One question of each family that the scene answers unambiguously."""
    makers = (_colour_question, _shape_question, _count_question,
              _where_question, _yes_no_question)
    questions = [q for q in (make(scene, rng) for make in makers) if q is not None]
    return [_with_annotators(q, rng) for q in questions]


def _draft(question: str, question_type: str, answer_type: str, answer: str) -> Question:
    return Question(question, question_type, answer_type, answer, (answer,) * NUM_ANSWERS)


def _unique_kinds(scene: Scene) -> list[Shape]:
    counts = Counter(s.kind for s in scene.shapes)
    return [s for s in scene.shapes if counts[s.kind] == 1]


def _colour_question(scene: Scene, rng: random.Random) -> Question:
    unique = _unique_kinds(scene)
    if unique:  # "the circle" only names one shape when there is one circle
        shape = rng.choice(unique)
        text = f"what color is the {shape.kind}?"
    else:
        shape = rng.choice(scene.shapes)
        text = f"what color is the shape {_where(shape)}?"
    return _draft(text, "what color is the", "other", shape.colour)


def _shape_question(scene: Scene, rng: random.Random) -> Question:
    shape = rng.choice(scene.shapes)
    return _draft(f"what shape is {_where(shape)}?", "what shape is", "other", shape.kind)


def _count_question(scene: Scene, rng: random.Random) -> Question:
    family = rng.randrange(3)
    if family == 0:
        text, count = "how many shapes are there?", len(scene.shapes)
    elif family == 1:
        colour = rng.choice([s.colour for s in scene.shapes] + list(SHAPE_COLOURS))
        text = f"how many {colour} shapes are there?"
        count = sum(s.colour == colour for s in scene.shapes)
    else:
        kind = rng.choice([s.kind for s in scene.shapes] + list(KINDS))
        text = f"how many {PLURALS[kind]} are there?"
        count = sum(s.kind == kind for s in scene.shapes)
    return _draft(text, "how many", "number", str(count))


def _where_question(scene: Scene, rng: random.Random) -> Question | None:
    unique = _unique_kinds(scene)
    if unique:
        shape = rng.choice(unique)
        return _draft(f"where is the {shape.kind}?", "where is the", "other", shape.position)
    pairs = Counter((s.colour, s.kind) for s in scene.shapes)
    unique_pairs = [s for s in scene.shapes if pairs[(s.colour, s.kind)] == 1]
    if not unique_pairs:
        return None
    shape = rng.choice(unique_pairs)
    text = f"where is the {shape.colour} {shape.kind}?"
    return _draft(text, "where is the", "other", shape.position)


def _yes_no_question(scene: Scene, rng: random.Random) -> Question:
    present = {(s.colour, s.kind) for s in scene.shapes}
    if rng.random() < 0.5:
        colour, kind = rng.choice(sorted(present))
        answer = "yes"
    else:
        colour, kind = _absent_pair(scene, present, rng)
        answer = "no"
    article = "an" if colour[0] in "aeiou" else "a"
    return _draft(f"is there {article} {colour} {kind}?", "is there a", "yes/no", answer)


def _absent_pair(scene: Scene, present: set[tuple[str, str]],
                 rng: random.Random) -> tuple[str, str]:
    """An absent (colour, kind); half the time a hard one that shares a present kind."""
    absent = [(c, k) for c in SHAPE_COLOURS for k in KINDS if (c, k) not in present]
    hard = [(c, k) for c, k in absent if any(s.kind == k for s in scene.shapes)]
    return rng.choice(hard if hard and rng.random() < 0.5 else absent)


def _with_annotators(question: Question, rng: random.Random) -> Question:
    """Replace 1-2 of the 10 answers by a plausible wrong one, for a few questions."""
    if rng.random() >= NOISY_QUESTION_RATE:
        return question
    answers = list(question.answers)
    for slot in rng.sample(range(NUM_ANSWERS), rng.randint(1, 2)):
        answers[slot] = _wrong_answer(question, rng)
    return Question(question.question, question.question_type, question.answer_type,
                    question.answer, tuple(answers))


def _wrong_answer(question: Question, rng: random.Random) -> str:
    if question.answer_type == "yes/no":
        return "no" if question.answer == "yes" else "yes"
    if question.answer_type == "number":
        truth = int(question.answer)
        return str(rng.choice([n for n in (truth - 1, truth + 1) if 0 <= n <= MAX_SHAPES_LIMIT]))
    for pool in (list(SHAPE_COLOURS), list(KINDS), list(POSITIONS.values())):
        if question.answer in pool:
            return rng.choice([a for a in pool if a != question.answer])
    raise ValueError(f"no wrong-answer pool for {question.answer!r}")
