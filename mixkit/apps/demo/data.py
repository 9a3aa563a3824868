"""The demo's training data, in memory: images decoded once, scenes, caption and question rows; its tokenizers.

Images are decoded once and kept as one tensor, since a 48-px image costs more to decode than to encode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from mixkit.apps.demo.config import DemoConfig, shapes_config
from mixkit.data.shapes import (
    COUNT_WORDS, POSITIONS, Scene, ShapesPaths, make_example, most_frequent, write_shapes_dataset,
)
from mixkit.data.text import clean_caption, clean_question
from mixkit.data.tokenizers import train_bert_tokenizer, word_level_t5_tokenizer
from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig, load_image
from mixkit.models.blip2.reference import CAPTION_PROMPT, VQA_PROMPT
from mixkit.utils.io import read_json


def write_data(config: DemoConfig, root: Path) -> ShapesPaths:
    return write_shapes_dataset(root, shapes_config(config), progress=True)


def load_images(root: Path, relpaths: Sequence[str], image_size: int) -> torch.Tensor:
    """Every image decoded and normalised once: [N, 3, S, S]."""
    transform = EvalImageTransform(ImageProcessorConfig(image_size=image_size))
    return torch.stack([transform(load_image(root / path)) for path in relpaths])


class ImageTextSamples(Dataset):
    """Samples over an in-memory image tensor: {"image": tensor, "image_index": int, **text fields}."""

    def __init__(self, images: torch.Tensor, rows: Sequence[dict[str, Any]]):
        self.images, self.rows = images, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {"image": self.images[row["image_index"]], **row}


@dataclass
class TrainData:
    """The training split, in memory: images, scenes (the ViT's labels) and the text of every sample."""

    images: torch.Tensor
    scenes: list[Scene]
    captions: list[dict[str, Any]]  # {"image_index", "caption"}
    questions: list[dict[str, Any]]  # {"image_index", "question", "answer"} (majority answer)


def load_train_data(paths: ShapesPaths, config: DemoConfig) -> TrainData:
    caption_records, vqa_records = read_json(paths.caption_train), read_json(paths.vqa_train)
    order = sorted({record["image"] for record in caption_records})
    index = {path: i for i, path in enumerate(order)}
    # The scenes are regenerated rather than read back: the files hold only their text.
    examples = [make_example("train", i, shapes_config(config)) for i in range(config.num_train)]
    if order != [example.image for example in examples]:
        raise RuntimeError("caption_train.json does not list the images in index order")
    captions = [{"image_index": index[r["image"]], "caption": clean_caption(r["caption"])} for r in caption_records]
    questions = [{"image_index": index[r["image"]], "question": clean_question(r["question"]),
                  "answer": most_frequent(r["answer"])} for r in vqa_records]
    images = load_images(paths.root, order, config.image_size)
    return TrainData(images, [example.scene for example in examples], captions, questions)


def describe_scene(scene: Scene) -> str:
    """Everything in the picture, in words: what the pretrained LM reads in place of the image."""
    shapes = ", ".join(f"{s.size} {s.colour} {s.kind} {POSITIONS[(s.row, s.col)]}" for s in scene.shapes)
    count = COUNT_WORDS[len(scene.shapes)]
    return f"{count} shape{'s' if len(scene.shapes) > 1 else ''} on a {scene.background} background: {shapes}."


def prompted_pairs(data: TrainData) -> list[dict[str, Any]]:
    """(image, prompt, target) rows: the caption prompt -> a caption, the VQA prompt -> the answer."""
    rows = [{"image_index": r["image_index"], "text_input": CAPTION_PROMPT, "text_output": r["caption"]}
            for r in data.captions]
    rows += [{"image_index": r["image_index"], "text_input": VQA_PROMPT.format(r["question"]),
              "text_output": r["answer"]} for r in data.questions]
    return rows


def tokenizer_texts(data: TrainData) -> list[str]:
    texts = [row["caption"] for row in data.captions] + [CAPTION_PROMPT]
    texts += [VQA_PROMPT.format(row["question"]) + " " + row["answer"] for row in data.questions]
    return texts + [describe_scene(scene) for scene in data.scenes[:500]]


def train_tokenizers(data: TrainData, directory: Path,
                     vocab_size: int) -> tuple[PreTrainedTokenizerBase, PreTrainedTokenizerBase]:
    """The LM's T5 tokenizer and the Q-Former's BERT tokenizer, both learned on the training text."""
    texts = tokenizer_texts(data)
    return word_level_t5_tokenizer(texts, directory / "t5"), train_bert_tokenizer(texts, directory / "bert", vocab_size)
