"""Surviving unreadable images: skip them in the dataset, drop them when collating, fail past a budget.

`SkipBadImages` wraps a dataset so an image that cannot be decoded yields a `SkippedSample`
instead of killing a DataLoader worker; `collate_skipping_none` drops those samples and
counts them in the batch; `BadImageBudget`, fed every batch in the main process, raises
`TooManyBadImagesError` once too large a share of the images seen was unreadable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from mixkit.data.transforms import ImageLoadError


class TooManyBadImagesError(RuntimeError):
    """More unreadable images than the `BadImageBudget` allows."""


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
