"""`load_dataset`: from a dataset name to a ready caption or VQA dataset.

`load_dataset(name, ...)` mirrors PaddleMIX's call: a standard set (`coco_caption`,
`vg_caption`, `coco_vqa`, see `mixkit.data.sources`), the synthetic `shapes` set, or
user files (`custom_caption`, `custom_vqa`) in the schema of `mixkit.data.validation`.
``split="train"`` gives a training dataset, any other split an evaluation one.

It resolves the name to files (`ResolvedFiles`: records, image root, VQA scoring files;
standard sets through `mixkit.data.download`, shapes through a generated cache), reads and
schema-checks the records, and builds the dataset class of `mixkit.data.datasets`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from mixkit.data.bad_images import SkipBadImages
from mixkit.data.datasets import CaptionDataset, CaptionEvalDataset, PathLike, VqaDataset, VqaEvalDataset
from mixkit.data.download import DatasetNotFoundError, datasets_home, ensure_standard_files
from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.sources import get_source
from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig, TrainImageTransform, Transform
from mixkit.data.validation import AnnotationError, ValidationReport, read_records, records_problems
from mixkit.utils.io import write_json

DATASET_NAMES: tuple[str, ...] = ("coco_caption", "vg_caption", "coco_vqa", "shapes",
                                  "custom_caption", "custom_vqa")
TASKS: tuple[str, ...] = ("caption", "vqa")


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


def _user_files(data_files: PathLike | Sequence[PathLike], image_root: PathLike | None) -> ResolvedFiles:
    """The user's own record files; images are relative to `image_root`, else to the first file's folder."""
    files = _as_paths(data_files)
    return ResolvedFiles(files, Path(image_root) if image_root else files[0].parent)


def _resolve_standard(name: str, split: str, data_files: Any, image_root: PathLike | None,
                      allow_download: bool | None) -> ResolvedFiles:
    source = get_source(name)
    if data_files is not None:  # the user's own copies: no catalogue lookup
        return _user_files(data_files, image_root)
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
    write_json(staging / ".complete", asdict(config))
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


def _resolve(name: str, split: str, task: str, data_files: Any, image_root: PathLike | None,
             shapes_config: ShapesConfig | None, allow_download: bool | None) -> ResolvedFiles:
    if name == "shapes":
        return _resolve_shapes(split, task, data_files, shapes_config)
    if name.startswith("custom_"):
        if data_files is None:
            raise ValueError(f"{name} needs data_files=<your JSON or JSON-lines annotation file(s)>")
        return _user_files(data_files, image_root)
    return _resolve_standard(name, split, data_files, image_root, allow_download)


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
    if vqa_question_file is not None:
        files = replace(files, vqa_question_file=Path(vqa_question_file))
    if vqa_annotation_file is not None:
        files = replace(files, vqa_annotation_file=Path(vqa_annotation_file))
    records = load_records(files.records, record_kind(chosen, split))
    dataset = _build(chosen, split, records, files, transform or _default_transform(split, image_size),
                     prompt, max_words)
    return SkipBadImages(dataset) if skip_bad_images else dataset
