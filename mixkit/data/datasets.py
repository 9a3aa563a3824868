"""Caption and VQA datasets, `load_dataset`, and skipping of unreadable images.

`load_dataset(name, ...)` mirrors PaddleMIX's call: a standard set (`coco_caption`,
`vg_caption`, `coco_vqa`, see `mixkit.data.sources`), the synthetic `shapes` set, or
user files (`custom_caption`, `custom_vqa`) in the schema of `mixkit.data.validation`.
``split="train"`` gives a training dataset, any other split an evaluation one.

Samples are plain dicts, with LAVIS's keys:

- `CaptionDataset`:     ``image``, ``text_input`` (cleaned caption after the prompt), ``image_id`` (index)
- `CaptionEvalDataset`: ``image``, ``image_id``, ``references``
- `VqaDataset`:         ``image``, ``text_input`` (cleaned question), ``answers``, ``weights``, ``question_id``
- `VqaEvalDataset`:     ``image``, ``text_input``, ``question_id``

Records are held as a few numpy arrays (strings as one UTF-8 blob plus offsets), not a
list of dicts: DataLoader workers read the parent's memory through fork, and touching a
Python object writes its reference count, which copies its page into every worker; numpy
buffers are never written, so memory stays flat however many workers run (LAVIS users
saw it grow with the annotation size). Images are opened only in ``__getitem__``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
import zipfile
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.sources import DatasetSource, RemoteFile, get_source
from mixkit.data.text import CaptionProcessor, QuestionProcessor
from mixkit.data.transforms import (EvalImageTransform, ImageLoadError, ImageProcessorConfig,
                                    TrainImageTransform, load_image)
from mixkit.data.validation import AnnotationError, ValidationReport, read_records, records_problems
from mixkit.models.hub import downloads_allowed, mixkit_home

DATASET_NAMES: tuple[str, ...] = ("coco_caption", "vg_caption", "coco_vqa", "shapes",
                                  "custom_caption", "custom_vqa")
TASKS: tuple[str, ...] = ("caption", "vqa")
Transform = Callable[[Image.Image], torch.Tensor]
PathLike = str | os.PathLike


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk and may not be downloaded; the message says what to fetch."""


class TooManyBadImagesError(RuntimeError):
    """More unreadable images than the `BadImageBudget` allows."""


# ------------------------------------------------------------------- compact columns


class StringColumn:
    """Strings stored as one UTF-8 byte array plus int64 offsets (no per-string Python objects)."""

    def __init__(self, values: Iterable[str]) -> None:
        encoded = [value.encode("utf-8") for value in values]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.blob[start:end].tobytes().decode("utf-8")


class StringListColumn:
    """A list of strings per row: all items in one `StringColumn`, rows as offsets into it."""

    def __init__(self, rows: Sequence[Sequence[str]]) -> None:
        self.items = StringColumn(item for row in rows for item in row)
        self.starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=self.starts[1:])

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, index: int) -> list[str]:
        return [self.items[i] for i in range(self.starts[index], self.starts[index + 1])]


# ------------------------------------------------------------------------- datasets


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


def eval_image_id(record: dict[str, Any], index: int) -> int:
    """An integer image id: the record's own, else LAVIS's rule (last ``_`` field of the file name), else `index`."""
    value = record.get("image_id")
    if isinstance(value, int):
        return value
    for text in (value, Path(record["image"]).stem.rsplit("_", 1)[-1]):
        if isinstance(text, str) and text.isdigit():
            return int(text)
    return index


class CaptionEvalDataset(_ImageRecords):
    """Caption evaluation: one record per image with its reference captions."""

    def __init__(self, records: Sequence[dict[str, Any]], image_root: PathLike, transform: Transform) -> None:
        super().__init__(records, image_root, transform)
        self.references = StringListColumn([record["caption"] for record in records])
        self.image_ids = np.array([eval_image_id(r, i) for i, r in enumerate(records)], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.load(index), "image_id": int(self.image_ids[index]),
                "references": self.references[index]}


def answer_weights(answers: Sequence[str]) -> tuple[list[str], list[float]]:
    """Distinct answers in first-seen order, each weighted by its share of the annotators (LAVIS)."""
    counts = Counter(answers)
    return list(counts), [count / len(answers) for count in counts.values()]


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


# ------------------------------------------------------------------ bad-image policy


@dataclass(frozen=True)
class SkippedSample:
    """Stands in for a sample whose image could not be read.

    A bare None would do for dropping it, but the budget must name the bad files, and
    a DataLoader worker can only tell the main process through what it returns.
    """

    index: int
    path: str
    reason: str


class SkipBadImages(Dataset):
    """Wrap a dataset so an unreadable image gives a `SkippedSample` instead of killing the run."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except ImageLoadError as error:
            return SkippedSample(index, str(error.path), error.reason)


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, turn numbers into tensors, keep everything else (strings, lists) as lists."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = torch.stack(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


def collate_skipping_none(samples: Sequence[Any],
                          collate_fn: Callable[[list[Any]], dict[str, Any]] = collate_samples) -> dict[str, Any]:
    """Drop None and `SkippedSample`s, collate the rest, and report the drops in the batch.

    Adds ``num_seen``, ``num_skipped`` and ``skipped_images`` (paths); a batch whose
    samples were all skipped holds only these keys. Wrap a task collator with
    ``functools.partial(collate_skipping_none, collate_fn=...)``.
    """
    kept = [s for s in samples if s is not None and not isinstance(s, SkippedSample)]
    batch = collate_fn(kept) if kept else {}
    batch["num_seen"] = len(samples)
    batch["num_skipped"] = len(samples) - len(kept)
    batch["skipped_images"] = [s.path for s in samples if isinstance(s, SkippedSample)]
    return batch


@dataclass
class BadImageBudget:
    """Fail the run when more than `max_fraction` of the images seen were unreadable.

    Nothing is judged before `min_seen` samples, so one bad file in the first batch does
    not stop a run. Call `update` in the main process with every collated batch.
    """

    max_fraction: float = 0.01
    min_seen: int = 100
    num_listed: int = 5
    seen: int = 0
    skipped: int = 0
    recent: deque[str] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if not 0 <= self.max_fraction <= 1:
            raise ValueError(f"max_fraction must be in [0, 1], got {self.max_fraction}")
        if self.min_seen < 1:
            raise ValueError(f"min_seen must be >= 1, got {self.min_seen}")
        self.recent = deque(self.recent, maxlen=self.num_listed)

    @property
    def fraction(self) -> float:
        return self.skipped / self.seen if self.seen else 0.0

    def update(self, batch: dict[str, Any]) -> None:
        self.seen += batch["num_seen"]
        self.skipped += batch["num_skipped"]
        self.recent.extend(batch.get("skipped_images", []))
        if self.seen >= self.min_seen and self.fraction > self.max_fraction:
            raise TooManyBadImagesError(
                f"{self.skipped} of {self.seen} images ({self.fraction:.1%}) could not be read, over the "
                f"budget of {self.max_fraction:.1%}; last bad files: {', '.join(self.recent)}. "
                "Run `validate_annotations` on the annotation file to list missing images.")

    def summary(self) -> str:
        return f"{self.skipped} of {self.seen} images skipped as unreadable ({self.fraction:.2%})"


# ---------------------------------------------------------------- download / locate


def datasets_home() -> Path:
    """``$MIXKIT_HOME/datasets``: standard sets live in ``<name>/`` below it."""
    return mixkit_home() / "datasets"


def _open_url(url: str) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - catalogue URLs only


def _hash_matches(path: Path, digest: str, algorithm: str) -> bool:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest() == digest


def download_file(url: str, dest: Path, md5: str | None = None, sha256: str | None = None,
                  progress: bool = True) -> Path:
    """Download to ``dest.part``, verify the checksum when one is known, then rename into place.

    The rename is atomic, so `dest` either is complete or does not exist: an interrupted
    download never passes for a finished one.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _open_url(url) as response, part.open("wb") as out:
        total = int(getattr(response, "headers", {}).get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
    for algorithm, digest in (("md5", md5), ("sha256", sha256)):
        if digest is not None and not _hash_matches(part, digest, algorithm):
            part.unlink()
            raise OSError(f"{algorithm} mismatch for {url}: the download is corrupt, try again")
    os.replace(part, dest)
    return dest


def _extract_archive(archive: Path, target: Path) -> None:
    """Unzip `archive` and move its `target.name` folder into place in one rename."""
    staging = target.parent / f".extracting-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(staging)
    if not (staging / target.name).is_dir():
        raise OSError(f"{archive} holds no top-level {target.name}/ folder")
    os.replace(staging / target.name, target)
    shutil.rmtree(staging)


def fetch_remote(file: RemoteFile, folder: Path, progress: bool = True) -> None:
    """Bring one catalogue file into `folder` (downloading, verifying, extracting archives)."""
    target = folder / file.target
    if not file.archive:
        download_file(file.url, target, file.md5, file.sha256, progress)
        return
    archive = download_file(file.url, folder / "downloads" / file.filename, file.md5, file.sha256, progress)
    _extract_archive(archive, target)
    archive.unlink()  # the COCO zips alone are ~20 GB


def _required_files(source: DatasetSource, split: str) -> tuple[RemoteFile, ...]:
    if split not in source.annotations:
        raise ValueError(f"{source.name} has no split {split!r}; it has {', '.join(source.splits)}")
    return source.annotations[split] + source.images[split]


def _not_found_message(source: DatasetSource, split: str, folder: Path, missing: list[RemoteFile]) -> str:
    lines = [f"{source.name} ({split}) is not in {folder}. Fetch these files:"]
    for file in missing:
        checksum = f" (md5 {file.md5})" if file.md5 else ""
        action = "unzip into" if file.archive else "save as"
        where = folder / file.target
        lines.append(f"  {file.url}{checksum}\n      -> {action} {where.parent if file.archive else where}")
    lines.append("or set MIXKIT_ALLOW_DOWNLOAD=1 (or pass allow_download=True) to download them, "
                 "or point data_files/image_root at copies you have.")
    return "\n".join(lines)


def ensure_standard_files(source: DatasetSource, split: str, allow_download: bool | None = None) -> Path:
    """The dataset's folder, with the split's files present; download them only if allowed."""
    folder = datasets_home() / source.name
    missing = [f for f in _required_files(source, split) if not (folder / f.target).exists()]
    if not missing:
        return folder
    allowed = downloads_allowed(None if allow_download is None else not allow_download)
    if not allowed:
        raise DatasetNotFoundError(_not_found_message(source, split, folder, missing))
    for file in missing:
        fetch_remote(file, folder)
    return folder


# ------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class ResolvedFiles:
    """Where a dataset's records, images and (VQA eval) scoring files are."""

    records: tuple[Path, ...]
    image_root: Path
    vqa_question_file: Path | None = None
    vqa_annotation_file: Path | None = None
    answer_list_file: Path | None = None


def _as_paths(data_files: PathLike | Sequence[PathLike]) -> tuple[Path, ...]:
    if isinstance(data_files, (str, os.PathLike)):
        return (Path(data_files),)
    return tuple(Path(f) for f in data_files)


def _resolve_standard(name: str, split: str, data_files: Any, image_root: PathLike | None,
                      allow_download: bool | None) -> ResolvedFiles:
    source = get_source(name)
    if data_files is not None:  # the user's own copies: no catalogue lookup
        files = _as_paths(data_files)
        return ResolvedFiles(files, Path(image_root) if image_root else files[0].parent)
    folder = ensure_standard_files(source, split, allow_download)

    def extra(mapping: dict[str, str]) -> Path | None:
        return folder / mapping[split] if split in mapping else None

    return ResolvedFiles(tuple(folder / f.target for f in source.record_files(split)),
                         Path(image_root) if image_root else folder / "images",
                         extra(source.vqa_question_file), extra(source.vqa_annotation_file),
                         extra(source.answer_list))


def shapes_root(config: ShapesConfig) -> Path:
    """The cache folder of a generated shapes set; one per distinct config."""
    key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:12]
    return datasets_home() / "shapes" / key


def ensure_shapes(config: ShapesConfig) -> Path:
    """Generate the shapes set for `config` into the cache, unless a complete copy is there."""
    root = shapes_root(config)
    if (root / ".complete").is_file():
        return root
    staging = root.with_name(root.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    write_shapes_dataset(staging, config)
    (staging / ".complete").write_text(json.dumps(asdict(config)) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)  # a half-written set is never mistaken for a finished one
    return root


def _resolve_shapes(split: str, task: str, data_files: Any, shapes_config: ShapesConfig | None) -> ResolvedFiles:
    if data_files is not None:
        root = _as_paths(data_files)[0]
    elif shapes_config is not None:
        root = ensure_shapes(shapes_config)
    else:
        raise DatasetNotFoundError("shapes needs data_files=<folder written by write_shapes_dataset> "
                                   "or shapes_config=ShapesConfig(...) to generate one into the cache")
    paths = ShapesPaths.under(root)
    if split not in paths.images:
        raise ValueError(f"shapes has no split {split!r}; it has train, val, test")
    if task == "caption":
        return ResolvedFiles((getattr(paths, f"caption_{split}"),), paths.root)
    return ResolvedFiles((getattr(paths, f"vqa_{split}"),), paths.root,
                         None if split == "train" else paths.vqa_questions[split],
                         None if split == "train" else paths.vqa_annotations[split])


# --------------------------------------------------------------------------- loading


def record_kind(task: str, split: str) -> str:
    return f"{task}_{'train' if split == 'train' else 'eval'}"


def load_records(paths: Sequence[Path], kind: str, max_listed: int = 5) -> list[dict[str, Any]]:
    """Read and schema-check every file; raise `AnnotationError` naming the first problems."""
    records: list[dict[str, Any]] = []
    for path in paths:
        file_records = read_records(path)
        problems = records_problems(path, file_records, kind)
        if problems:
            report = ValidationReport(path, kind, len(file_records), 0, False, problems)
            raise AnnotationError(report.error_message(max_listed))
        records.extend(file_records)
    return records


def _task_of(name: str, task: str | None) -> str:
    own = {"coco_caption": "caption", "vg_caption": "caption", "coco_vqa": "vqa",
           "custom_caption": "caption", "custom_vqa": "vqa"}.get(name)
    if own is not None and task not in (None, own):
        raise ValueError(f"{name} is a {own} dataset, not {task}")
    chosen = own or task or "caption"  # shapes serves both; captions unless asked
    if chosen not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {chosen!r}")
    return chosen


def _resolve(name: str, split: str, task: str, data_files: Any, image_root: PathLike | None,
             shapes_config: ShapesConfig | None, allow_download: bool | None) -> ResolvedFiles:
    if name == "shapes":
        return _resolve_shapes(split, task, data_files, shapes_config)
    if name.startswith("custom_"):
        if data_files is None:
            raise ValueError(f"{name} needs data_files=<your JSON or JSON-lines annotation file(s)>")
        files = _as_paths(data_files)
        return ResolvedFiles(files, Path(image_root) if image_root else files[0].parent)
    return _resolve_standard(name, split, data_files, image_root, allow_download)


def _default_transform(split: str, image_size: int) -> Transform:
    config = ImageProcessorConfig(image_size=image_size)
    return TrainImageTransform(config) if split == "train" else EvalImageTransform(config)


def _build(task: str, split: str, records: list[dict[str, Any]], files: ResolvedFiles,
           transform: Transform, prompt: str, max_words: int) -> Dataset:
    if task == "caption" and split == "train":
        return CaptionDataset(records, files.image_root, transform, prompt, max_words)
    if task == "caption":
        return CaptionEvalDataset(records, files.image_root, transform)
    if split == "train":
        return VqaDataset(records, files.image_root, transform, max_words)
    return VqaEvalDataset(records, files.image_root, transform, max_words, files.vqa_question_file,
                          files.vqa_annotation_file, files.answer_list_file)


def load_dataset(name: str, data_files: PathLike | Sequence[PathLike] | None = None, split: str = "train",
                 image_root: PathLike | None = None, *, task: str | None = None,
                 transform: Transform | None = None, image_size: int = 224, prompt: str = "",
                 max_words: int = 50, skip_bad_images: bool = False,
                 shapes_config: ShapesConfig | None = None, allow_download: bool | None = None,
                 vqa_question_file: PathLike | None = None,
                 vqa_annotation_file: PathLike | None = None) -> Dataset:
    """Load a caption or VQA dataset; ``split="train"`` gives a training set, others an eval set.

    - standard sets look in ``$MIXKIT_HOME/datasets/<name>/`` and raise `DatasetNotFoundError`
      (what to fetch from where) unless downloads are allowed (`allow_download` or
      ``MIXKIT_ALLOW_DOWNLOAD=1``); `data_files`/`image_root` point at copies elsewhere.
    - ``shapes``: `data_files` is a folder from `write_shapes_dataset`, or `shapes_config`
      generates one into the cache; `task` picks captions (default) or VQA.
    - ``custom_caption``/``custom_vqa``: `data_files` are yours; `image_root` defaults to
      the first file's folder.

    Records are schema-checked on load (`AnnotationError`); images are not opened until
    used. `transform` defaults to LAVIS's train/eval transform at `image_size`;
    `skip_bad_images` wraps the result in `SkipBadImages` (use `collate_skipping_none`).
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    chosen = _task_of(name, task)
    files = _resolve(name, split, chosen, data_files, image_root, shapes_config, allow_download)
    if vqa_question_file is not None or vqa_annotation_file is not None:
        files = ResolvedFiles(files.records, files.image_root,
                              Path(vqa_question_file) if vqa_question_file else files.vqa_question_file,
                              Path(vqa_annotation_file) if vqa_annotation_file else files.vqa_annotation_file,
                              files.answer_list_file)
    records = load_records(files.records, record_kind(chosen, split))
    dataset = _build(chosen, split, records, files, transform or _default_transform(split, image_size),
                     prompt, max_words)
    return SkipBadImages(dataset) if skip_bad_images else dataset
