"""WebDataset-style tar shards, for datasets too large for one disk or one file system.

`write_shards` turns an annotation file plus its image folder into numbered tar files
and an index (``shards.json``). Each image becomes one tar *sample* under a key
(``000000042``), stored as two files, as WebDataset expects:

- ``{key}.{ext}``: the image file's original bytes (never re-encoded)
- ``{key}.json``:  ``{"image": <relative path>, "records": [...]}``, every record that
  names this image (so a COCO image with 5 captions is stored once, not 5 times)

The shards are plain tars (``tar tf`` lists them; ``webdataset.WebDataset`` reads them),
written deterministically: images sorted by path, fixed mtime/uid/mode, sorted JSON
keys. Same input, same bytes.

`ShardedCaptionDataset` and `ShardedVqaDataset` stream the shards back. They read the
tars with `tarfile` in stream mode, not with the `webdataset` library: mixkit needs an
explicit rank/world for tests and launchers, a length known up front, one tar sample
expanding into several dataset samples, and workers that may receive no shard at all,
and doing that inside webdataset's pipeline took more code than the 20 lines it
replaces. No extra dependency is needed.

Each epoch the shard list is shuffled with ``(seed, epoch)`` (identical on every rank),
dealt out by rank, then by DataLoader worker, so every sample is read exactly once per
epoch. Samples are the same dicts as `mixkit.data.datasets` gives, with the same text
cleaning.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from mixkit.data.datasets import SkippedSample, answer_weights, eval_image_id
from mixkit.data.text import CaptionProcessor, QuestionProcessor
from mixkit.data.transforms import ImageLoadError, decode_image, load_image
from mixkit.data.validation import RECORD_KINDS, AnnotationError, read_records, validate_annotations

INDEX_NAME = "shards.json"
INDEX_FORMAT = "mixkit.shards"
INDEX_VERSION = 1
DEFAULT_PATTERN = "shard-%06d.tar"
DEFAULT_MAX_BYTES = 1 << 30  # ~1 GB: large enough to stream efficiently, small enough to spread over nodes
_BLOCK = 512  # tar header and data are written in 512-byte blocks
_KEY_DIGITS = 9
Transform = Callable[[Image.Image], torch.Tensor]


# ----------------------------------------------------------------------------- index


@dataclass(frozen=True)
class ShardInfo:
    """One tar file: its name (relative to the index) and how much it holds."""

    name: str
    num_images: int  # tar samples (keys)
    num_samples: int  # dataset samples: records, e.g. captions
    num_bytes: int


@dataclass(frozen=True)
class ShardIndex:
    """The contents of ``shards.json``; `root` is the folder the shard names are relative to."""

    root: Path
    kind: str
    shards: tuple[ShardInfo, ...]

    @property
    def num_samples(self) -> int:
        return sum(shard.num_samples for shard in self.shards)

    @property
    def num_images(self) -> int:
        return sum(shard.num_images for shard in self.shards)

    def path(self, shard: int) -> Path:
        return self.root / self.shards[shard].name

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShardIndex:
        """Read an index from a ``shards.json`` file or the folder that holds one."""
        path = Path(path)
        if path.is_dir():
            path = path / INDEX_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no shard index; write one with `mixkit data shards` (write_shards)")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
            raise ValueError(f"{path}: not a {INDEX_FORMAT} v{INDEX_VERSION} index")
        shards = tuple(ShardInfo(**shard) for shard in data["shards"])
        return cls(path.parent, data["kind"], shards)


# ---------------------------------------------------------------------------- writing


@dataclass
class ShardsReport:
    """What `write_shards` wrote and what it left out."""

    index_path: Path
    kind: str
    shards: list[ShardInfo]
    skipped_images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    skipped_records: int = 0

    @property
    def num_images(self) -> int:
        return sum(shard.num_images for shard in self.shards)

    @property
    def num_samples(self) -> int:
        return sum(shard.num_samples for shard in self.shards)

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


# ---------------------------------------------------------------------------- reading


def iter_tar_samples(fileobj: Any) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each group of consecutive files sharing a key, WebDataset's rule."""
    key: str | None = None
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name_key, _, extension = member.name.rsplit("/", 1)[-1].partition(".")
            if name_key != key and files:
                yield key, files  # type: ignore[misc]
                files = {}
            key = name_key
            files[extension] = tar.extractfile(member).read()  # type: ignore[union-attr]
    if files:
        yield key, files  # type: ignore[misc]


def decode_shard_image(data: bytes, where: str) -> Image.Image:
    """Decode image bytes from a shard to RGB; `ImageLoadError` names `where` (``shard.tar:key.jpg``)."""
    return decode_image(io.BytesIO(data), where)


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """The explicit rank/world if given, else torch.distributed's, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if rank is not None or world_size is not None:
        raise ValueError("pass both rank and world_size, or neither")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def assign_shards(num_shards: int, *, rank: int, world_size: int, worker: int = 0, num_workers: int = 1,
                  shuffle: bool = False, seed: int = 0, epoch: int = 0) -> list[int]:
    """The shards one worker of one rank reads this epoch; over all ranks and workers, each exactly once."""
    if not 0 <= rank < world_size or not 0 <= worker < num_workers:
        raise ValueError(f"bad split: rank {rank} of {world_size}, worker {worker} of {num_workers}")
    order = list(range(num_shards))
    if shuffle:  # the same (seed, epoch) on every rank, so the ranks deal from one deck
        random.Random(f"shards/{seed}/{epoch}").shuffle(order)
    return order[rank::world_size][worker::num_workers]


def _buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle a stream with a `size`-item buffer (the 5 captions of one image stop being neighbours)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = rng.randrange(size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


@dataclass
class ShardStreamConfig:
    """How a sharded dataset splits and orders its shards.

    `rank`/`world_size` default to torch.distributed's (read when iterating, so the
    dataset may be built before ``init_process_group``). `shuffle_buffer` applies only
    with `shuffle`. `skip_bad_images` yields `SkippedSample`s for undecodable images
    (use `collate_skipping_none`) instead of raising `ImageLoadError`.
    """

    shuffle: bool = False
    seed: int = 0
    shuffle_buffer: int = 1000
    rank: int | None = None
    world_size: int | None = None
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        rank_and_world(self.rank, self.world_size)  # both or neither
        if self.rank is not None and not 0 <= self.rank < self.world_size:  # type: ignore[operator]
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")


class _ShardedRecords(IterableDataset):
    """Shared part: choose this worker's shards, stream them, expand each image into samples."""

    kinds: tuple[str, ...] = ()

    def __init__(self, shards: str | os.PathLike | ShardIndex, transform: Transform,
                 stream: ShardStreamConfig | None = None) -> None:
        self.index = shards if isinstance(shards, ShardIndex) else ShardIndex.load(shards)
        if self.index.kind not in self.kinds:
            raise ValueError(f"{type(self).__name__} reads {' or '.join(self.kinds)} shards, "
                             f"not {self.index.kind} ({self.index.root})")
        self.transform = transform
        self.stream = stream or ShardStreamConfig()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch`; call before each epoch (DataLoader workers copy the dataset per epoch)."""
        self.epoch = epoch

    def _shards(self, worker: int, num_workers: int) -> list[int]:
        rank, world = rank_and_world(self.stream.rank, self.stream.world_size)
        return assign_shards(len(self.index.shards), rank=rank, world_size=world, worker=worker,
                             num_workers=num_workers, shuffle=self.stream.shuffle, seed=self.stream.seed,
                             epoch=self.epoch)

    def __len__(self) -> int:
        """Samples this rank reads this epoch (all its workers together), from the index."""
        return sum(self.index.shards[i].num_samples for i in self._shards(0, 1))

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        samples = (s for shard in self._shards(worker, num_workers) for s in self._read_shard(shard))
        if not (self.stream.shuffle and self.stream.shuffle_buffer > 1):
            return samples
        rank, _ = rank_and_world(self.stream.rank, self.stream.world_size)
        rng = random.Random(f"samples/{self.stream.seed}/{self.epoch}/{rank}/{worker}")
        return _buffer_shuffle(samples, self.stream.shuffle_buffer, rng)

    def _read_shard(self, shard: int) -> Iterator[Any]:
        path = self.index.path(shard)
        with path.open("rb") as file:
            for key, files in iter_tar_samples(file):
                meta = json.loads(files.pop("json"))
                extension, data = next(iter(files.items()))
                yield from self._expand(meta["records"], data, f"{path}:{key}.{extension}")

    def _expand(self, records: list[dict[str, Any]], data: bytes, where: str) -> Iterator[Any]:
        try:
            image = decode_shard_image(data, where)
        except ImageLoadError as error:
            if not self.stream.skip_bad_images:
                raise
            yield from (SkippedSample(-1, where, error.reason) for _ in records)
            return
        for record in records:
            # Per record, as the map-style datasets do: each caption gets its own random crop.
            yield self.sample(self.transform(image), record)

    def sample(self, image: torch.Tensor, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class ShardedCaptionDataset(_ShardedRecords):
    """Caption shards; yields `CaptionDataset` samples (train) or `CaptionEvalDataset` samples (eval)."""

    kinds = ("caption_train", "caption_eval")

    def __init__(self, shards: str | os.PathLike | ShardIndex, transform: Transform,
                 stream: ShardStreamConfig | None = None, prompt: str = "", max_words: int = 50) -> None:
        super().__init__(shards, transform, stream)
        self.process = CaptionProcessor(prompt=prompt, max_words=max_words)

    def sample(self, image: torch.Tensor, record: dict[str, Any]) -> dict[str, Any]:
        if self.index.kind == "caption_eval":
            return {"image": image, "image_id": record["sample_image_id"], "references": record["caption"]}
        return {"image": image, "text_input": self.process(record["caption"]),
                "image_id": record["sample_image_id"]}


class ShardedVqaDataset(_ShardedRecords):
    """VQA shards; yields `VqaDataset` samples (train) or `VqaEvalDataset` samples (eval)."""

    kinds = ("vqa_train", "vqa_eval")

    def __init__(self, shards: str | os.PathLike | ShardIndex, transform: Transform,
                 stream: ShardStreamConfig | None = None, max_words: int = 50) -> None:
        super().__init__(shards, transform, stream)
        self.process = QuestionProcessor(max_words=max_words)

    def sample(self, image: torch.Tensor, record: dict[str, Any]) -> dict[str, Any]:
        sample = {"image": image, "text_input": self.process(record["question"]),
                  "question_id": record["question_id"]}
        if self.index.kind == "vqa_train":
            sample["answers"], sample["weights"] = answer_weights(record["answer"])
        return sample


# --------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mixkit data shards``."""
    parser.add_argument("--kind", required=True, choices=RECORD_KINDS, help="record schema of the annotations")
    parser.add_argument("--annotations", required=True, type=Path, help="JSON or JSON-lines annotation file")
    parser.add_argument("--image-root", required=True, type=Path,
                        help="folder the records' `image` paths are relative to")
    parser.add_argument("--output", required=True, type=Path, help="folder for the tar shards and shards.json")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="most images per shard")
    parser.add_argument("--max-shard-mb", type=float, default=DEFAULT_MAX_BYTES / 1e6,
                        help="about the most megabytes per shard")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN, help="shard file name, with one %%d field")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output")


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
