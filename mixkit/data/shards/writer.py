"""Writing tar shards from an annotation file (`write_shards`, `mixkit data shards`)."""

from __future__ import annotations


import argparse
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from mixkit.data.records import lavis_image_id as eval_image_id
from mixkit.data.transforms import ImageLoadError, load_image
from mixkit.data.validation import AnnotationError, read_records, validate_annotations
from mixkit.data.shards.options import DEFAULT_MAX_BYTES, DEFAULT_PATTERN
from mixkit.data.shards.index import INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, ShardInfo, ShardTotals


logger = logging.getLogger(__name__)

_BLOCK = 512  # tar header and data are written in 512-byte blocks
_KEY_DIGITS = 9

# ---------------------------------------------------------------------------- writing


@dataclass
class ShardsReport(ShardTotals):
    """What `write_shards` wrote and what it left out."""

    index_path: Path
    kind: str
    shards: list[ShardInfo]
    skipped_images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    skipped_records: int = 0

    def summary(self) -> str:
        return (f"{self.index_path}: {len(self.shards)} shards, {self.num_images} images, "
                f"{self.num_samples} {self.kind} samples; skipped {len(self.skipped_images)} unreadable "
                f"images ({self.skipped_records} records)")


def _tar_size(files: Sequence[tuple[str, bytes]]) -> int:
    return sum(_BLOCK + -(-len(data) // _BLOCK) * _BLOCK for _, data in files)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    # Fixed metadata: the shard's bytes depend only on its contents.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _ShardWriter:
    """Appends samples to ``pattern % n`` tars, starting a new one when a limit would be passed."""

    def __init__(self, directory: Path, pattern: str, max_samples: int, max_bytes: int) -> None:
        self.directory, self.pattern = directory, pattern
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.shards: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._images = self._samples = self._bytes = 0

    def add(self, files: Sequence[tuple[str, bytes]], num_samples: int) -> None:
        size = _tar_size(files)
        full = self._images >= self.max_samples or (self._images and self._bytes + size > self.max_bytes)
        if self._tar is None or full:
            self._start()
        for name, data in files:
            self._tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))
        self._images, self._samples, self._bytes = self._images + 1, self._samples + num_samples, self._bytes + size

    def _start(self) -> None:
        self.close()
        self._tar = tarfile.open(self._part_path(), "w", format=tarfile.USTAR_FORMAT)

    def _name(self) -> str:
        return self.pattern % len(self.shards)

    def _part_path(self) -> Path:
        return self.directory / (self._name() + ".part")

    def close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        part = self._part_path()
        final = part.with_name(self._name())
        os.replace(part, final)  # a shard under its real name is always complete
        self.shards.append(ShardInfo(final.name, self._images, self._samples, final.stat().st_size))
        self._tar, self._images, self._samples, self._bytes = None, 0, 0, 0


def _image_ids(records: list[dict[str, Any]], kind: str) -> list[int | None]:
    """The integer ``image_id`` the map-style dataset would yield for each record (None for VQA)."""
    if kind == "caption_train":  # CaptionDataset: running index over distinct ids, in file order
        index_of: dict[str, int] = {}
        return [index_of.setdefault(str(r.get("image_id", r["image"])), len(index_of)) for r in records]
    if kind == "caption_eval":
        return [eval_image_id(record, i) for i, record in enumerate(records)]
    return [None] * len(records)


def _stored_record(record: dict[str, Any], image_id: int | None) -> dict[str, Any]:
    stored = {k: v for k, v in record.items() if k != "image"}
    if image_id is not None:
        stored["sample_image_id"] = image_id
    return stored


def _group_by_image(records: list[dict[str, Any]], kind: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(image path, its stored records), sorted by path; records keep their file order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record, image_id in zip(records, _image_ids(records, kind)):
        groups.setdefault(record["image"], []).append(_stored_record(record, image_id))
    return sorted(groups.items())


def _image_extension(path: str) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    return {"jpeg": "jpg", "": "img"}.get(ext, ext)


def _sample_files(key: str, image: str, image_bytes: bytes, records: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    meta = json.dumps({"image": image, "records": records}, sort_keys=True, ensure_ascii=False)
    # Image before JSON, in name order; readers group a key's files wherever they fall.
    return sorted([(f"{key}.{_image_extension(image)}", image_bytes), (f"{key}.json", meta.encode("utf-8"))])


def _check_pattern(pattern: str) -> None:
    try:
        first, second = pattern % 0, pattern % 1
    except (TypeError, ValueError):
        raise ValueError(f"output_pattern must hold one integer field such as %06d, got {pattern!r}") from None
    if first == second or "/" in first or os.sep in first:
        raise ValueError(f"output_pattern must name distinct files in one folder, got {pattern!r}")


def _check_limits(max_samples: int, max_bytes: int) -> None:
    if max_samples < 1:
        raise ValueError(f"max_samples_per_shard must be >= 1, got {max_samples}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes_per_shard must be >= 1, got {max_bytes}")


def _prepare_output(output_dir: Path, overwrite: bool) -> Path:
    index_path = output_dir / INDEX_NAME
    if index_path.exists() and not overwrite:
        raise FileExistsError(f"{index_path} exists; pass overwrite=True (--overwrite) to replace these shards")
    output_dir.mkdir(parents=True, exist_ok=True)
    index_path.unlink(missing_ok=True)  # readers must not see an old index beside new shards
    return index_path


def _write_index(report: ShardsReport, annotation_file: Path) -> None:
    data = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": report.kind,
            "num_images": report.num_images, "num_samples": report.num_samples,
            "shards": [vars(shard) for shard in report.shards],
            "source": annotation_file.name,
            "skipped_images": [{"image": image, "reason": reason} for image, reason in report.skipped_images]}
    part = report.index_path.with_name(INDEX_NAME + ".part")
    part.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(part, report.index_path)


def write_shards(annotation_file: str | os.PathLike, kind: str, image_root: str | os.PathLike,
                 output_dir: str | os.PathLike, output_pattern: str = DEFAULT_PATTERN,
                 max_samples_per_shard: int = 1000, max_bytes_per_shard: int = DEFAULT_MAX_BYTES,
                 overwrite: bool = False) -> ShardsReport:
    """Write the images and records of `annotation_file` as tar shards plus ``shards.json`` in `output_dir`.

    The file is validated first (`validate_annotations`: schema and missing images raise
    `AnnotationError`). Images that exist but cannot be decoded are left out and listed in
    the report and the index. A shard holds at most `max_samples_per_shard` images and,
    unless one image alone is larger, about `max_bytes_per_shard` bytes.
    """
    annotation_file, image_root, output_dir = Path(annotation_file), Path(image_root), Path(output_dir)
    _check_pattern(output_pattern)
    _check_limits(max_samples_per_shard, max_bytes_per_shard)
    validate_annotations(annotation_file, kind, image_root)
    report = ShardsReport(_prepare_output(output_dir, overwrite), kind, [])
    writer = _ShardWriter(output_dir, output_pattern, max_samples_per_shard, max_bytes_per_shard)
    written = 0
    for image, records in _group_by_image(read_records(annotation_file), kind):
        try:
            load_image(image_root / image)  # a full decode: truncated files fail here, not in training
        except ImageLoadError as error:
            report.skipped_images.append((image, error.reason))
            report.skipped_records += len(records)
            continue
        key = f"{written:0{_KEY_DIGITS}d}"
        writer.add(_sample_files(key, image, (image_root / image).read_bytes(), records), len(records))
        written += 1
    writer.close()
    report.shards = writer.shards
    _write_index(report, annotation_file)
    return report


# --------------------------------------------------------------------------------- CLI (options: options.py)


def run(args: argparse.Namespace) -> int:
    """Write the shards and print a summary (0); print the problem and return 2 on bad input."""
    try:
        report = write_shards(args.annotations, args.kind, args.image_root, args.output, args.pattern,
                              args.samples_per_shard, int(args.max_shard_mb * 1e6), args.overwrite)
    except (AnnotationError, FileExistsError, ValueError) as error:
        print(f"error: {error}")
        return 2
    print(report.summary())
    for image, reason in report.skipped_images[:5]:
        print(f"  skipped {image}: {reason}")
    return 0
