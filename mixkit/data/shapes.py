"""A synthetic "shapes" dataset written in the real datasets' file formats.

Each image shows 1..max_shapes coloured shapes on a 3x3 grid over a gray, black or
white background. Because every fact about a scene is known, captions and VQA
answers are true by construction, and a tiny BLIP-2 can learn the ~60-word language
in minutes on a CPU. The files mimic LAVIS's COCO-Karpathy caption records, the COCO
caption ground truth read by pycocotools, the official VQAv2 question/annotation
files and LAVIS's VQA records, so loaders, scorers and trainers run on it unchanged.

Layout under ``root`` (see `ShapesPaths`)::

    images/{split}/shapes_{split}_{index:06d}.jpg
    annotations/caption_train.json, caption_{val,test}.json, caption_{val,test}_gt.json
    annotations/vqa_{split}_questions.json, vqa_{split}_annotations.json
    annotations/vqa_{train,val,test}.json

Image ids are the per-split file index (so LAVIS's "last `_` field of the file name"
rule recovers them); question ids are ``image_id * 10 + k``. Both are unique within a
split, which is the scope of every file that holds them.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Shape colours and background colours are disjoint and far apart in RGB, so the
# colour of every pixel names exactly one thing.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
    "white": (235, 235, 235),
}
KINDS: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares",
                           "triangle": "triangles", "cross": "crosses"}
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("solid", "gradient", "noise")
# Half-extent of a shape as a fraction of a grid cell.
SIZE_RADIUS: dict[str, float] = {"small": 0.24, "large": 0.4}

# One shape per cell of a 3x3 grid keeps every position answer unambiguous.
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
MAX_SHAPES_LIMIT = len(COUNT_WORDS) - 1

# VQAv2-style `question_type` prefixes, one per question template family.
QUESTION_TYPES: tuple[str, ...] = (
    "what color is the", "what shape is", "how many", "where is the", "is there a",
)
QUESTIONS_PER_IMAGE_LIMIT = 10  # question ids are image_id * 10 + k
NUM_ANSWERS = 10
NOISY_QUESTION_RATE = 0.2
CAPTION_TEMPLATES = 7

VOCABULARY: frozenset[str] = frozenset(
    "a an and on the in at of is are there what how many where with picture".split()
    + ["shape", "shapes", "background", "color", "yes", "no"]
    + list(SHAPE_COLOURS) + list(BACKGROUND_COLOURS) + list(KINDS) + list(PLURALS.values())
    + list(SIZES) + ["top", "bottom", "left", "right", "center"]
    + list(COUNT_WORDS[1:]) + [str(n) for n in range(MAX_SHAPES_LIMIT + 1)]
)


@dataclass
class ShapesConfig:
    """How many images of which kind to write; validated on construction."""

    num_train: int = 2000
    num_val: int = 200
    num_test: int = 200
    image_size: int = 64
    max_shapes: int = 3
    captions_per_image: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ShapesConfig.{name} must be an int, got {value!r}")
        _check(self.num_train >= 1, f"num_train must be >= 1, got {self.num_train}")
        _check(self.num_val >= 0 and self.num_test >= 0, "num_val/num_test must be >= 0")
        # Below 32 px a small shape is ~2 px across and its kind is not visible.
        _check(self.image_size >= 32, f"image_size must be >= 32, got {self.image_size}")
        _check(1 <= self.max_shapes <= MAX_SHAPES_LIMIT,
               f"max_shapes must be in 1..{MAX_SHAPES_LIMIT}, got {self.max_shapes}")
        _check(1 <= self.captions_per_image <= CAPTION_TEMPLATES,
               f"captions_per_image must be in 1..{CAPTION_TEMPLATES}, "
               f"got {self.captions_per_image}")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class Shape:
    """One shape; `x`, `y` are its centre as fractions of the image side."""

    kind: str
    colour: str
    size: str
    row: int
    col: int
    x: float
    y: float

    @property
    def position(self) -> str:
        return POSITIONS[(self.row, self.col)]

    def centre_px(self, image_size: int) -> tuple[int, int]:
        return round(self.x * image_size), round(self.y * image_size)


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw an image and to derive every true statement about it."""

    background: str
    texture: str
    texture_seed: int
    shapes: tuple[Shape, ...]  # in reading order (row, then column)


@dataclass(frozen=True)
class Question:
    question: str
    question_type: str
    answer_type: str  # "yes/no", "number" or "other", as in VQAv2
    answer: str
    answers: tuple[str, ...]  # NUM_ANSWERS annotator answers, mostly `answer`


@dataclass(frozen=True)
class ShapesPaths:
    """Where `write_shapes_dataset` puts every file; `ShapesPaths.under(root)` finds them."""

    root: Path
    images: dict[str, Path]
    caption_train: Path
    caption_val: Path
    caption_test: Path
    caption_gt: dict[str, Path]  # "val"/"test" -> COCO caption ground truth
    vqa_questions: dict[str, Path]
    vqa_annotations: dict[str, Path]
    vqa_train: Path
    vqa_val: Path
    vqa_test: Path

    @classmethod
    def under(cls, root: Path) -> ShapesPaths:
        root = Path(root)
        ann = root / "annotations"
        return cls(
            root=root,
            images={s: root / "images" / s for s in SPLITS},
            caption_train=ann / "caption_train.json",
            caption_val=ann / "caption_val.json",
            caption_test=ann / "caption_test.json",
            caption_gt={s: ann / f"caption_{s}_gt.json" for s in ("val", "test")},
            vqa_questions={s: ann / f"vqa_{s}_questions.json" for s in SPLITS},
            vqa_annotations={s: ann / f"vqa_{s}_annotations.json" for s in SPLITS},
            vqa_train=ann / "vqa_train.json",
            vqa_val=ann / "vqa_val.json",
            vqa_test=ann / "vqa_test.json",
        )


# --------------------------------------------------------------------------- scenes


def generate_scene(rng: random.Random, config: ShapesConfig) -> Scene:
    """Draw a random scene: distinct grid cells, so no two shapes overlap."""
    count = rng.randint(1, config.max_shapes)
    cells = sorted(rng.sample(sorted(POSITIONS), count))
    shapes = tuple(_random_shape(rng, row, col) for row, col in cells)
    return Scene(
        background=rng.choice(list(BACKGROUND_COLOURS)),
        texture=rng.choice(TEXTURES),
        texture_seed=rng.randrange(2**32),
        shapes=shapes,
    )


def _random_shape(rng: random.Random, row: int, col: int) -> Shape:
    size = rng.choice(SIZES)
    # Jitter inside the cell, keeping 3% of a cell clear of its border.
    slack = max(0.0, 0.5 - SIZE_RADIUS[size] - 0.03)
    x = (col + 0.5 + rng.uniform(-slack, slack)) / 3
    y = (row + 0.5 + rng.uniform(-slack, slack)) / 3
    return Shape(rng.choice(KINDS), rng.choice(list(SHAPE_COLOURS)), size, row, col, x, y)


def render_scene(scene: Scene, size: int) -> Image.Image:
    """Draw `scene` as a `size` x `size` RGB image; deterministic given the scene."""
    image = _render_background(scene, size)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, size)
    return image


def _render_background(scene: Scene, size: int) -> Image.Image:
    base = BACKGROUND_COLOURS[scene.background]
    if scene.texture == "solid":
        return Image.new("RGB", (size, size), base)
    pixels = np.broadcast_to(np.asarray(base, np.float32), (size, size, 3)).copy()
    rng = np.random.default_rng(scene.texture_seed)
    if scene.texture == "gradient":
        # A gentle ramp (+-20 levels) that never changes which colour name applies.
        ramp = np.linspace(-20.0, 20.0, size, dtype=np.float32)
        pixels += ramp[:, None, None] if rng.random() < 0.5 else ramp[None, :, None]
    else:
        pixels += rng.normal(0.0, 6.0, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, size: int) -> None:
    cx, cy = shape.x * size, shape.y * size
    r = SIZE_RADIUS[shape.size] * size / 3
    fill = SHAPE_COLOURS[shape.colour]
    if shape.kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind == "square":
        h = 0.85 * r  # a slightly smaller square looks as big as the circle
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape.kind == "triangle":
        # Equilateral, centred on its centroid so the centre pixel is inside.
        points = [(cx, cy - r), (cx - 0.87 * r, cy + 0.5 * r), (cx + 0.87 * r, cy + 0.5 * r)]
        draw.polygon(points, fill=fill)
    else:
        arm = 0.3 * r
        draw.rectangle([cx - r, cy - arm, cx + r, cy + arm], fill=fill)
        draw.rectangle([cx - arm, cy - r, cx + arm, cy + r], fill=fill)


# ------------------------------------------------------------------------- captions


def scene_captions(scene: Scene, rng: random.Random, num: int = 5) -> list[str]:
    """`num` true captions from distinct templates, in random template order."""
    _check(1 <= num <= CAPTION_TEMPLATES, f"num must be in 1..{CAPTION_TEMPLATES}")
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


# ---------------------------------------------------------------------------- writer


@dataclass(frozen=True)
class Example:
    """One written image with its scene, captions and questions."""

    split: str
    image_id: int
    image: str  # path relative to the dataset root
    scene: Scene
    captions: list[str]
    questions: list[Question]


def image_relpath(split: str, index: int) -> str:
    return f"images/{split}/shapes_{split}_{index:06d}.jpg"


def make_example(split: str, index: int, config: ShapesConfig) -> Example:
    """The scene, captions and questions for one image, without drawing it."""
    # Independent streams per image and per purpose: changing a caption template
    # never changes a scene, and image k is the same whatever the split's length.
    def stream(purpose: str) -> random.Random:
        return random.Random(f"shapes/{config.seed}/{split}/{index}/{purpose}")

    scene = generate_scene(stream("scene"), config)
    captions = scene_captions(scene, stream("captions"), config.captions_per_image)
    questions = scene_questions(scene, stream("questions"))
    return Example(split, index, image_relpath(split, index), scene, captions, questions)


def write_shapes_dataset(root: Path, config: ShapesConfig, progress: bool = False) -> ShapesPaths:
    """Draw every image and write every annotation file under `root`."""
    paths = ShapesPaths.under(root)
    for directory in [*paths.images.values(), paths.caption_train.parent]:
        directory.mkdir(parents=True, exist_ok=True)
    total = sum(config.num_images(s) for s in SPLITS)
    with tqdm(total=total, disable=not progress, unit="img", desc="shapes") as bar:
        for split in SPLITS:
            examples = []
            for index in range(config.num_images(split)):
                examples.append(make_example(split, index, config))
                _save_image(examples[-1], paths.root, config.image_size)
                bar.update()
            _write_annotations(paths, split, examples)
    return paths


def _save_image(example: Example, root: Path, size: int) -> None:
    # 4:4:4 chroma keeps the colours of 5-pixel shapes from bleeding into the background.
    render_scene(example.scene, size).save(root / example.image, quality=90, subsampling=0)


def _write_annotations(paths: ShapesPaths, split: str, examples: list[Example]) -> None:
    if split == "train":
        _dump(paths.caption_train, karpathy_train_records(examples))
        _dump(paths.vqa_train, lavis_vqa_records(examples))
    else:
        _dump(getattr(paths, f"caption_{split}"), karpathy_eval_records(examples))
        _dump(paths.caption_gt[split], coco_caption_gt(examples))
        _dump(getattr(paths, f"vqa_{split}"), lavis_vqa_records(examples))
    _dump(paths.vqa_questions[split], vqa_questions_file(examples, split))
    _dump(paths.vqa_annotations[split], vqa_annotations_file(examples, split))


def _dump(path: Path, obj: Any) -> None:
    # Sorted keys and no timestamps: the same config gives byte-identical files.
    path.write_text(json.dumps(obj, sort_keys=True) + "\n", encoding="utf-8")


INFO: dict[str, str] = {
    "description": "mixkit synthetic shapes", "version": "1.0",
    "contributor": "mixkit.data.shapes", "url": "", "year": "", "date_created": "",
}
LICENSE: dict[str, str] = {"name": "CC0-1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}


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


# ------------------------------------------------------------------------- baselines


def question_type_of(question: str) -> str:
    """The longest known VQAv2-style prefix of `question`, else its first two words."""
    text = question.lower().strip()
    known = [t for t in QUESTION_TYPES if text.startswith(t)]
    return max(known, key=len) if known else " ".join(text.split()[:2])


def _mode(values: Iterable[str]) -> str:
    """Most common value; ties go to the alphabetically first so results are stable."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def most_frequent_answer_by_question_type(train_vqa_records: list[dict[str, Any]]) -> dict[str, str]:
    """The "prior" VQA baseline: per question type, the most common majority answer."""
    majority: dict[str, list[str]] = {}
    for record in train_vqa_records:
        qtype = question_type_of(record["question"])
        majority.setdefault(qtype, []).append(_mode(record["answer"]))
    return {qtype: _mode(answers) for qtype, answers in sorted(majority.items())}


def most_frequent_caption(train_caption_records: list[dict[str, Any]]) -> str:
    """The "say the same thing for every image" captioning baseline."""
    return _mode(record["caption"] for record in train_caption_records)
