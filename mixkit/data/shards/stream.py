"""Streaming shards back as datasets: split by rank and by DataLoader worker, seeded, resumable."""

from __future__ import annotations


import hashlib
import logging
import os
import random
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mixkit.data.bad_images import SkippedSample
from mixkit.data.records import answer_weights
from mixkit.data.text import CaptionProcessor, QuestionProcessor
from mixkit.data.transforms import ImageLoadError, TrainImageTransform
from mixkit.utils.distributed import rank_and_world
from mixkit.data.shards.index import ShardIndex, resolve_shards
from mixkit.data.shards.tar import decode_shard_image, grouped_members, open_tar, read_meta
from mixkit.data.transforms import Transform


logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class _SampleRef:
    """One dataset sample before decoding: its record and where its image bytes are."""

    shard: int
    position: int  # the record's number within its shard: (shard, position) keys the sample's augmentation
    path: Path
    offset: int
    size: int
    where: str  # ``shard.tar:key.jpg``, for errors
    record: dict[str, Any]

    def image_bytes(self) -> bytes:
        with self.path.open("rb") as file:
            file.seek(self.offset)
            return file.read(self.size)


def assign_shards(num_shards: int, *, rank: int, world_size: int, shuffle: bool = False, seed: int = 0,
                  epoch: int = 0) -> list[int]:
    """The shards one rank reads: every `world_size`-th, the same set each epoch, in a per-epoch order.

    A rank keeps its shards so its sample count, and with it the number of steps per epoch
    the Trainer computes once, never changes (and a node may keep its shards on a local disk).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"bad split: rank {rank} of {world_size}")
    order = list(range(rank, num_shards, world_size))
    if shuffle:
        random.Random(f"shards/{seed}/{epoch}/{rank}").shuffle(order)
    return order


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


def _repeating(make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """The items of `make()`, then of `make()` again, and so on (the caller takes what it needs); stops if empty."""
    while True:
        empty = True
        for item in make():
            empty = False
            yield item
        if empty:
            return


@dataclass
class ShardStreamConfig:
    """How a sharded dataset splits, orders and batches its samples.

    `rank`/`world_size` default to torch.distributed's (read when iterating, so the
    dataset may be built before ``init_process_group``). `shuffle_buffer` applies only
    with `shuffle`. `skip_bad_images` yields `SkippedSample`s for undecodable images
    (use `collate_skipping_none`) instead of raising `ImageLoadError`.

    `batch_size` is the DataLoader's (`shard_loader` sets it): DataLoader workers take whole
    batches of the rank's stream in turn, so batches and their order do not depend on the
    number of workers. `drop_last` leaves out a short last batch. `even_batches` (data-parallel
    training) gives every rank the same number of full batches, as accelerate does for
    map-style data: a rank holding fewer samples repeats its first ones (with `drop_last`,
    every rank stops at the fewest instead).
    """

    shuffle: bool = False
    seed: int = 0
    shuffle_buffer: int = 1000
    rank: int | None = None
    world_size: int | None = None
    skip_bad_images: bool = False
    batch_size: int = 1
    drop_last: bool = False
    even_batches: bool = False

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        rank_and_world(self.rank, self.world_size)  # both or neither
        if self.rank is not None and not 0 <= self.rank < self.world_size:  # type: ignore[operator]
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")


class ShardedRecords(IterableDataset):
    """Shared part: this rank's shards as one stream of records, dealt to workers by batch, decoded on demand.

    Each epoch a rank reads its shards (`assign_shards`) in a seeded order, shuffles the
    records through a seeded buffer, and cuts or pads the stream to `len(self)`; worker `w`
    of `W` decodes batches `w, w + W, ...` of it. Every worker walks the same stream of
    headers and JSON records but reads and decodes only its own images.
    """

    kinds: tuple[str, ...] = ()

    def __init__(self, shards: str | os.PathLike | ShardIndex, transform: Transform,
                 stream: ShardStreamConfig | None = None) -> None:
        self.index = shards if isinstance(shards, ShardIndex) else resolve_shards(shards)
        if self.index.kind not in self.kinds:
            raise ValueError(f"{type(self).__name__} reads {' or '.join(self.kinds)} shards, "
                             f"not {self.index.kind} ({self.index.root})")
        self.index.check_files()
        self.transform = transform
        self.stream = stream or ShardStreamConfig()
        self.epoch = 0
        self.augmentation_seed: int | None = None

    def seed_augmentation(self, seed: int) -> None:
        """Random augmentation drawn from (seed, epoch, shard, record position in shard), not the global RNG:
        the same sample gets the same crop whatever the number of processes or workers, and after a resume."""
        self.augmentation_seed = seed

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch`; call before each epoch (DataLoader workers copy the dataset per epoch)."""
        self.epoch = epoch

    def set_batching(self, batch_size: int, drop_last: bool = False) -> None:
        """The DataLoader's batch size and drop_last (see `ShardStreamConfig`); `shard_loader` calls this.

        Also fixes rank and world size here, in the main process: a DataLoader worker started
        with ``spawn`` has no process group to ask.
        """
        rank, world = rank_and_world(self.stream.rank, self.stream.world_size)
        self.stream = replace(self.stream, batch_size=batch_size, drop_last=drop_last, rank=rank, world_size=world)

    def rank_counts(self, world_size: int) -> list[int]:
        """Samples in each rank's shards, from the index."""
        return [sum(self.index.shards[i].num_samples for i in assign_shards(len(self.index.shards), rank=rank,
                                                                             world_size=world_size))
                for rank in range(world_size)]

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its workers together), the same every epoch."""
        return self._rank_length(*rank_and_world(self.stream.rank, self.stream.world_size))

    def _rank_length(self, rank: int, world: int) -> int:
        counts, batch = self.rank_counts(world), self.stream.batch_size
        if world == 1 or not self.stream.even_batches:
            own = counts[rank]
            return own - own % batch if self.stream.drop_last else own
        if min(counts) == 0:
            raise ValueError(f"{self.index.root}: {len(self.index.shards)} shards cannot feed {world} ranks; "
                             "write at least one shard per rank (smaller --samples-per-shard)")
        batches = min(c // batch for c in counts) if self.stream.drop_last else max(-(-c // batch) for c in counts)
        return batches * batch

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = rank_and_world(self.stream.rank, self.stream.world_size)
        stream = islice(_repeating(lambda: self._rank_refs(rank, world)), self._rank_length(rank, world))
        batch = self.stream.batch_size
        mine = (ref for i, ref in enumerate(stream) if (i // batch) % workers == worker)
        decoded: dict[tuple[Path, int], Image.Image | ImageLoadError] = {}
        return (self._load(ref, decoded) for ref in mine)

    def _rank_refs(self, rank: int, world: int) -> Iterator[_SampleRef]:
        order = assign_shards(len(self.index.shards), rank=rank, world_size=world, shuffle=self.stream.shuffle,
                              seed=self.stream.seed, epoch=self.epoch)
        refs = (ref for shard in order for ref in self._shard_refs(shard))
        if not (self.stream.shuffle and self.stream.shuffle_buffer > 1):
            return refs
        rng = random.Random(f"samples/{self.stream.seed}/{self.epoch}/{rank}")
        return _buffer_shuffle(refs, self.stream.shuffle_buffer, rng)

    def _shard_refs(self, shard: int) -> Iterator[_SampleRef]:
        path, position = self.index.path(shard), 0
        with open_tar(path) as tar:
            for key, members in grouped_members(tar):
                records = read_meta(tar, members, f"{path}:{key}")["records"]
                extension, image = next(((e, m) for e, m in members.items() if e != "json"), ("", None))
                if image is None:
                    raise ValueError(f"{path}:{key}: no image file beside {key}.json")
                for record in records:
                    yield _SampleRef(shard, position, path, image.offset_data, image.size,
                                     f"{path}:{key}.{extension}", record)
                    position += 1
        if position != self.index.shards[shard].num_samples:  # a stale index would make len() lie
            raise ValueError(f"{path}: holds {position} samples, its index says "
                             f"{self.index.shards[shard].num_samples}; write the shards and index again")

    def _load(self, ref: _SampleRef, decoded: dict[tuple[Path, int], Image.Image | ImageLoadError]) -> Any:
        key = (ref.path, ref.offset)
        if key not in decoded:  # one entry: the records of one image often follow each other
            decoded.clear()
            try:
                decoded[key] = decode_shard_image(ref.image_bytes(), ref.where)
            except ImageLoadError as error:
                if not self.stream.skip_bad_images:
                    raise
                decoded[key] = error
        image = decoded[key]
        if isinstance(image, ImageLoadError):
            return SkippedSample(-1, ref.where, image.reason)
        generator = self._generator(ref)
        pixels = self.transform(image) if generator is None else self.transform(image, generator=generator)
        return self.sample(pixels, ref.record)

    def _generator(self, ref: _SampleRef) -> torch.Generator | None:
        if self.augmentation_seed is None or not isinstance(self.transform, TrainImageTransform):
            return None
        key = f"{self.augmentation_seed}/{self.epoch}/{ref.shard}/{ref.position}".encode()
        return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1)

    def sample(self, image: torch.Tensor, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


def shard_loader(dataset: ShardedRecords, batch_size: int, collate_fn: Callable[[list[Any]], Any], *,
                 drop_last: bool = False, **loader_options: Any) -> DataLoader:
    """A plain DataLoader over a sharded dataset, which splits itself by rank and worker.

    The dataset is told the batch size first, so its workers take whole batches. Do not let
    accelerate prepare it: accelerate would split each rank's stream again (or read
    everything on rank 0 and dispatch it). Persistent workers are refused: they keep the
    copy of the dataset made at the first epoch and would never see `set_epoch`.
    """
    if loader_options.get("persistent_workers"):
        raise ValueError("persistent DataLoader workers never see set_epoch; sharded datasets need them off")
    dataset.set_batching(batch_size, drop_last)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, **loader_options)


class ShardedCaptionDataset(ShardedRecords):
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


class ShardedVqaDataset(ShardedRecords):
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
