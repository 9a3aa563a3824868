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

Modules: `config` (vocabulary, `ShapesConfig`), `scenes` (random scenes, drawing),
`text` (captions, questions), `formats` (the real datasets' records), `writer`
(`ShapesPaths`, `write_shapes_dataset`), `baselines` (the "no image" answers).
"""

from mixkit.data.shapes.baselines import (
    most_frequent, most_frequent_answer_by_question_type, most_frequent_caption, question_type_of,
)
from mixkit.data.shapes.config import (
    BACKGROUND_COLOURS, CAPTION_TEMPLATES, COUNT_WORDS, KINDS, MAX_SHAPES_LIMIT, NOISY_QUESTION_RATE, NUM_ANSWERS,
    PLURALS, POSITIONS, QUESTION_TYPES, QUESTIONS_PER_IMAGE_LIMIT, SHAPE_COLOURS, SIZE_RADIUS, SIZES, SPLITS,
    TEXTURES, VOCABULARY, ShapesConfig,
)
from mixkit.data.shapes.formats import (
    INFO, LICENSE, Example, coco_caption_gt, karpathy_eval_records, karpathy_train_records, lavis_vqa_records,
    question_id, vqa_annotations_file, vqa_questions_file,
)
from mixkit.data.shapes.scenes import Scene, Shape, generate_scene, render_scene
from mixkit.data.shapes.text import Question, caption_words, scene_captions, scene_questions
from mixkit.data.shapes.writer import ShapesPaths, image_relpath, make_example, write_shapes_dataset

__all__ = [
    "BACKGROUND_COLOURS", "CAPTION_TEMPLATES", "COUNT_WORDS", "INFO", "KINDS", "LICENSE", "MAX_SHAPES_LIMIT",
    "NOISY_QUESTION_RATE", "NUM_ANSWERS", "PLURALS", "POSITIONS", "QUESTIONS_PER_IMAGE_LIMIT", "QUESTION_TYPES",
    "SHAPE_COLOURS", "SIZES", "SIZE_RADIUS", "SPLITS", "TEXTURES", "VOCABULARY",
    "Example", "Question", "Scene", "Shape", "ShapesConfig", "ShapesPaths",
    "caption_words", "coco_caption_gt", "generate_scene", "image_relpath", "karpathy_eval_records",
    "karpathy_train_records", "lavis_vqa_records", "make_example", "most_frequent",
    "most_frequent_answer_by_question_type", "most_frequent_caption", "question_id", "question_type_of",
    "render_scene", "scene_captions", "scene_questions", "vqa_annotations_file", "vqa_questions_file",
    "write_shapes_dataset",
]
