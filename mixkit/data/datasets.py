"""The map-style caption and VQA datasets, built from validated records (see `mixkit.data.loading`).

Samples are plain dicts, with LAVIS's keys:

- `CaptionDataset`:     ``image``, ``text_input`` (cleaned caption after the prompt), ``image_id`` (index)
- `CaptionEvalDataset`: ``image``, ``image_id``, ``references``
- `VqaDataset`:         ``image``, ``text_input`` (cleaned question), ``answers``, ``weights``, ``question_id``
- `VqaEvalDataset`:     ``image``, ``text_input``, ``question_id``

Records are held as a few numpy arrays (`mixkit.data.columns`), not a list of dicts, so
DataLoader workers share them without copying. Images are opened only in ``__getitem__``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mixkit.data.columns import StringColumn, StringListColumn
from mixkit.data.records import answer_weights, lavis_image_id
from mixkit.data.text import CaptionProcessor, QuestionProcessor
from mixkit.data.transforms import TrainImageTransform, Transform, load_image
from mixkit.data.validation import AnnotationError

PathLike = str | os.PathLike


class _ImageRecords(Dataset):
    """Shared part: each record names an image, opened and transformed on access."""

    def __init__(self, records: Sequence[dict[str, Any]], image_root: PathLike, transform: Transform) -> None:
        self.image_root = Path(image_root)
        self.transform = transform
        self.images = StringColumn(record["image"] for record in records)
        self.augmentation_seed: int | None = None
        self.epoch = 0

    def seed_augmentation(self, seed: int) -> None:
        """Random augmentation drawn from (seed, epoch, sample index) instead of the global RNG: the same sample
        gets the same crop in 1 or N processes, with any number of workers, and after a resume."""
        self.augmentation_seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _sample_generator(self, index: int) -> torch.Generator | None:
        if self.augmentation_seed is None or not isinstance(self.transform, TrainImageTransform):
            return None
        mixed = ((self.augmentation_seed * 1_000_003 + self.epoch) * 1_000_033 + index) % (2**63 - 1)
        return torch.Generator().manual_seed(mixed)

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.image_root / self.images[index]

    def load(self, index: int) -> torch.Tensor:
        image = load_image(self.image_path(index))
        generator = self._sample_generator(index)
        return self.transform(image) if generator is None else self.transform(image, generator=generator)

    def check_image_files(self, max_listed: int = 5) -> None:
        """Before training: every record's image file exists, else `AnnotationError` listing the first few
        missing files with their record numbers (a stat per distinct image, no decoding)."""
        missing: list[str] = []
        count, seen = 0, set()
        for index in range(len(self)):
            relative = self.images[index]
            if relative in seen:
                continue
            seen.add(relative)
            if not (self.image_root / relative).is_file():
                count += 1
                if len(missing) < max_listed:
                    missing.append(f"record {index}: field 'image': no file {self.image_root / relative}")
        if count:
            raise AnnotationError(f"{count} image file(s) missing under {self.image_root}:\n  " + "\n  ".join(missing)
                                  + (f"\n  ... and {count - len(missing)} more" if count > len(missing) else ""))


class CaptionDataset(_ImageRecords):
    """Caption training: one record per caption; `image_id` is a running index over distinct images (as LAVIS)."""

    def __init__(self, records: Sequence[dict[str, Any]], image_root: PathLike, transform: Transform,
                 prompt: str = "", max_words: int = 50) -> None:
        super().__init__(records, image_root, transform)
        self.process = CaptionProcessor(prompt=prompt, max_words=max_words)
        self.captions = StringColumn(record["caption"] for record in records)
        index_of: dict[str, int] = {}
        # A record without image_id is identified by its image path.
        keys = (str(record.get("image_id", record["image"])) for record in records)
        self.image_index = np.fromiter((index_of.setdefault(k, len(index_of)) for k in keys),
                                       dtype=np.int64, count=len(records))
        self.num_images = len(index_of)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.load(index), "text_input": self.process(self.captions[index]),
                "image_id": int(self.image_index[index])}


class CaptionEvalDataset(_ImageRecords):
    """Caption evaluation: one record per image with its reference captions; ids by `lavis_image_id`."""

    def __init__(self, records: Sequence[dict[str, Any]], image_root: PathLike, transform: Transform) -> None:
        super().__init__(records, image_root, transform)
        self.references = StringListColumn([record["caption"] for record in records])
        self.image_ids = np.array([lavis_image_id(r, i) for i, r in enumerate(records)], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.load(index), "image_id": int(self.image_ids[index]),
                "references": self.references[index]}


class VqaDataset(_ImageRecords):
    """VQA training: cleaned question, distinct answers and their weights."""

    def __init__(self, records: Sequence[dict[str, Any]], image_root: PathLike, transform: Transform,
                 max_words: int = 50) -> None:
        super().__init__(records, image_root, transform)
        self.process = QuestionProcessor(max_words=max_words)
        self.questions = StringColumn(record["question"] for record in records)
        self.answers = StringListColumn([record["answer"] for record in records])
        self.question_ids = np.array([record["question_id"] for record in records], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        answers, weights = answer_weights(self.answers[index])
        return {"image": self.load(index), "text_input": self.process(self.questions[index]),
                "answers": answers, "weights": weights, "question_id": int(self.question_ids[index])}


class VqaEvalDataset(_ImageRecords):
    """VQA evaluation; the official question/annotation files (if any) are kept for the scorer."""

    def __init__(self, records: Sequence[dict[str, Any]], image_root: PathLike, transform: Transform,
                 max_words: int = 50, question_file: Path | None = None, annotation_file: Path | None = None,
                 answer_list_file: Path | None = None) -> None:
        super().__init__(records, image_root, transform)
        self.process = QuestionProcessor(max_words=max_words)
        self.questions = StringColumn(record["question"] for record in records)
        self.question_ids = np.array([record["question_id"] for record in records], dtype=np.int64)
        self.question_file = question_file
        self.annotation_file = annotation_file
        self.answer_list_file = answer_list_file

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.load(index), "text_input": self.process(self.questions[index]),
                "question_id": int(self.question_ids[index])}
