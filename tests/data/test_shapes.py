"""Tests for the synthetic shapes dataset: formats, determinism and truth of every answer."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mixkit.data import shapes
from mixkit.data.shapes import (
    POSITIONS, QUESTION_TYPES, SHAPE_COLOURS, VOCABULARY, Scene, ShapesConfig, ShapesPaths,
    caption_words, make_example, most_frequent_answer_by_question_type,
    most_frequent_caption, write_shapes_dataset,
)

CONFIG = ShapesConfig(num_train=40, num_val=12, num_test=12, seed=3)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> ShapesPaths:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), CONFIG)


def load(path: Path):
    return json.loads(path.read_text())


# ---------------------------------------------------------------- config, determinism


@pytest.mark.parametrize("field, value", [
    ("num_train", 0), ("num_val", -1), ("image_size", 16), ("max_shapes", 0),
    ("max_shapes", 7), ("captions_per_image", 8), ("captions_per_image", 0),
])
def test_config_rejects_bad_values(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        ShapesConfig(**{field: value})


def test_config_rejects_non_int() -> None:
    with pytest.raises(TypeError, match="seed"):
        ShapesConfig(seed=1.5)  # type: ignore[arg-type]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_config_gives_identical_bytes(tmp_path: Path) -> None:
    config = ShapesConfig(num_train=6, num_val=3, num_test=3)
    first = tree_bytes(write_shapes_dataset(tmp_path / "a", config).root)
    second = tree_bytes(write_shapes_dataset(tmp_path / "b", config).root)
    assert first == second
    assert len(first) == 12 + 14  # images + annotation files
    other = tree_bytes(write_shapes_dataset(tmp_path / "c", ShapesConfig(6, 3, 3, seed=1)).root)
    assert other != first


def test_ten_images_are_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    write_shapes_dataset(tmp_path, ShapesConfig(num_train=10, num_val=0, num_test=0))
    assert time.perf_counter() - start < 0.5


# ------------------------------------------------------------------------- formats


def test_images_exist_with_the_stated_size(written: ShapesPaths) -> None:
    for split in shapes.SPLITS:
        files = sorted(written.images[split].iterdir())
        assert len(files) == CONFIG.num_images(split)
        for path in files:
            with Image.open(path) as image:
                assert (image.size, image.mode, image.format) == ((64, 64), "RGB", "JPEG")


def test_karpathy_train_records(written: ShapesPaths) -> None:
    records = load(written.caption_train)
    assert len(records) == CONFIG.num_train * CONFIG.captions_per_image
    for record in records:
        assert set(record) == {"caption", "image", "image_id"}
        assert isinstance(record["caption"], str) and record["caption"]
        assert (written.root / record["image"]).is_file()
        # LAVIS names train images "coco_<id>"; ours are "shapes_<index>".
        assert record["image_id"] == f"shapes_{lavis_image_id(record['image'])}"


def lavis_image_id(image: str) -> int:
    """The id LAVIS's caption eval dataset derives from an image path."""
    return int(image.split("/")[-1].strip(".jpg").split("_")[-1])


@pytest.mark.parametrize("split", ["val", "test"])
def test_karpathy_eval_records_match_coco_ground_truth(written: ShapesPaths, split: str) -> None:
    records = load(getattr(written, f"caption_{split}"))
    gt = load(written.caption_gt[split])
    assert len(records) == CONFIG.num_images(split)
    assert set(gt) == {"images", "annotations", "info", "licenses", "type"}
    assert gt["type"] == "captions" and gt["licenses"] == []
    refs: dict[int, list[str]] = {}
    for ann in gt["annotations"]:
        assert isinstance(ann["id"], int) and isinstance(ann["image_id"], int)
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])
    assert {img["id"] for img in gt["images"]} == set(refs)
    for record in records:
        assert set(record) == {"caption", "image", "image_id"}
        assert record["image_id"] == lavis_image_id(record["image"])
        assert refs[record["image_id"]] == record["caption"]
        assert len(record["caption"]) == CONFIG.captions_per_image


def test_coco_ground_truth_loads_in_pycocotools(written: ShapesPaths) -> None:
    coco_module = pytest.importorskip("pycocotools.coco")
    coco = coco_module.COCO(str(written.caption_gt["val"]))
    results = coco.loadRes([{"image_id": i, "caption": "a red circle"} for i in coco.getImgIds()])
    assert sorted(results.getImgIds()) == list(range(CONFIG.num_val))
    assert len(coco.getAnnIds()) == CONFIG.num_val * CONFIG.captions_per_image


@pytest.mark.parametrize("split", shapes.SPLITS)
def test_vqa_official_files(written: ShapesPaths, split: str) -> None:
    questions = load(written.vqa_questions[split])
    annotations = load(written.vqa_annotations[split])
    assert set(questions) == {"info", "task_type", "data_type", "data_subtype", "license", "questions"}
    assert (questions["task_type"], questions["data_type"], questions["data_subtype"]) == (
        "Open-Ended", "shapes", split)
    assert set(annotations) == {"info", "data_type", "data_subtype", "license", "annotations"}
    by_id = {q["question_id"]: q for q in questions["questions"]}
    assert len(by_id) == len(questions["questions"]) == len(annotations["annotations"])
    assert {q["image_id"] for q in by_id.values()} <= set(range(CONFIG.num_images(split)))
    for ann in annotations["annotations"]:
        check_vqa_annotation(ann, by_id[ann["question_id"]])


def check_vqa_annotation(ann: dict, question: dict) -> None:
    assert set(ann) == {"question_id", "image_id", "question_type", "answer_type",
                        "multiple_choice_answer", "answers"}
    assert ann["image_id"] == question["image_id"]
    assert question["question"].startswith(ann["question_type"])
    assert ann["question_type"] in QUESTION_TYPES
    assert ann["answer_type"] in {"yes/no", "number", "other"}
    assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
    assert {a["answer_confidence"] for a in ann["answers"]} == {"yes"}
    votes = Counter(a["answer"] for a in ann["answers"])
    # Noise never outvotes the truth: at least 8 of 10 annotators agree.
    assert votes[ann["multiple_choice_answer"]] >= 8


@pytest.mark.parametrize("split", shapes.SPLITS)
def test_lavis_vqa_records_match_official_files(written: ShapesPaths, split: str) -> None:
    records = load(getattr(written, f"vqa_{split}"))
    annotations = {a["question_id"]: a for a in load(written.vqa_annotations[split])["annotations"]}
    questions = {q["question_id"]: q for q in load(written.vqa_questions[split])["questions"]}
    assert sorted(r["question_id"] for r in records) == sorted(annotations)
    for record in records:
        assert set(record) == {"question_id", "question", "answer", "image", "dataset"}
        assert record["dataset"] == "vqa" and (written.root / record["image"]).is_file()
        ann = annotations[record["question_id"]]
        assert record["answer"] == [a["answer"] for a in ann["answers"]]
        assert record["question"] == questions[record["question_id"]]["question"]
        assert lavis_image_id(record["image"]) == ann["image_id"]


def test_some_answers_are_noisy(written: ShapesPaths) -> None:
    records = load(written.vqa_train)
    noisy = [r for r in records if len(set(r["answer"])) > 1]
    assert 0.05 < len(noisy) / len(records) < 0.4
    for record in noisy:  # one or two annotators disagree, never more
        assert Counter(record["answer"]).most_common(1)[0][1] in (8, 9)


# -------------------------------------------------------------------- answer truth


def answer_from_scene(scene: Scene, question: str) -> str:
    """An independent oracle: parse the question and read the answer off the scene."""
    phrase_to_position = {phrase_of(p): p for p in POSITIONS.values()}
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        return only(s.colour for s in scene.shapes if s.kind == m[1])
    if m := re.fullmatch(r"what color is the shape (.+)\?", question):
        return only(s.colour for s in scene.shapes if s.position == phrase_to_position[m[1]])
    if m := re.fullmatch(r"what shape is (.+)\?", question):
        return only(s.kind for s in scene.shapes if s.position == phrase_to_position[m[1]])
    if question == "how many shapes are there?":
        return str(len(scene.shapes))
    if m := re.fullmatch(r"how many (\w+) shapes are there\?", question):
        return str(sum(s.colour == m[1] for s in scene.shapes))
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        return str(sum(shapes.PLURALS[s.kind] == m[1] for s in scene.shapes))
    if m := re.fullmatch(r"where is the (\w+)\?", question):
        return only(s.position for s in scene.shapes if s.kind == m[1])
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
        return only(s.position for s in scene.shapes if (s.colour, s.kind) == (m[1], m[2]))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        return "yes" if any((s.colour, s.kind) == (m[1], m[2]) for s in scene.shapes) else "no"
    raise AssertionError(f"unknown question {question!r}")


def phrase_of(position: str) -> str:
    if position == "center":
        return "in the center"
    return ("on the " if position in ("left", "right") else "at the ") + position


def only(values) -> str:
    values = list(values)
    assert len(values) == 1, f"ambiguous question: {values}"
    return values[0]


def test_every_answer_is_true_of_its_scene() -> None:
    for index in range(200):
        example = make_example("train", index, CONFIG)
        assert 3 <= len(example.questions) <= 5
        for q in example.questions:
            assert answer_from_scene(example.scene, q.question) == q.answer, q


def test_colour_answers_match_drawn_pixels(written: ShapesPaths) -> None:
    for index in range(CONFIG.num_val):
        example = make_example("val", index, CONFIG)
        with Image.open(written.root / example.image) as image:
            pixels = image.convert("RGB").load()
            for shape in example.scene.shapes:
                rgb = pixels[shape.centre_px(CONFIG.image_size)]
                assert nearest_colour(rgb) == shape.colour, (example.image, shape)
                assert max(abs(a - b) for a, b in zip(rgb, SHAPE_COLOURS[shape.colour])) < 40


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    palette = {**SHAPE_COLOURS, **shapes.BACKGROUND_COLOURS}
    return min(palette, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, palette[name])))


def test_yes_no_answers_are_balanced() -> None:
    answers = [q.answer for i in range(200) for q in make_example("val", i, CONFIG).questions
               if q.answer_type == "yes/no"]
    assert len(answers) == 200
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_text_uses_only_the_declared_vocabulary() -> None:
    assert 50 <= len(VOCABULARY) <= 70
    for index in range(200):
        example = make_example("test", index, ShapesConfig(max_shapes=6, captions_per_image=7))
        texts = example.captions + [q.question for q in example.questions]
        texts += [a for q in example.questions for a in q.answers]
        for text in texts:
            assert set(caption_words(text)) <= VOCABULARY, text
        assert len(set(example.captions)) == 7


def test_captions_describe_the_scene() -> None:
    config = ShapesConfig(captions_per_image=7)
    for index in range(50):
        example = make_example("train", index, config)
        text = " | ".join(example.captions)
        for shape in example.scene.shapes:
            assert f"{shape.size} {shape.colour} {shape.kind} {phrase_of(shape.position)}" in text
        assert f"on a {example.scene.background} background" in text
        assert f"{shapes.COUNT_WORDS[len(example.scene.shapes)]} shape" in text


# ------------------------------------------------------------------------ baselines


def test_most_frequent_answer_by_question_type() -> None:
    records = [
        {"question": "how many shapes are there?", "answer": ["2"] * 9 + ["3"]},
        {"question": "how many red shapes are there?", "answer": ["2"] * 10},
        {"question": "how many circles are there?", "answer": ["1"] * 10},
        {"question": "is there an orange cross?", "answer": ["no"] * 8 + ["yes"] * 2},
        {"question": "Is there a red circle?", "answer": ["yes"] * 10},
        {"question": "is there a blue square?", "answer": ["no"] * 10},
    ]
    assert most_frequent_answer_by_question_type(records) == {"how many": "2", "is there a": "no"}


def test_most_frequent_caption_breaks_ties_alphabetically(written: ShapesPaths) -> None:
    records = [{"caption": c} for c in ["b", "a", "b", "a", "c"]]
    assert most_frequent_caption(records) == "a"
    assert most_frequent_caption(load(written.caption_train)) in {
        r["caption"] for r in load(written.caption_train)}
