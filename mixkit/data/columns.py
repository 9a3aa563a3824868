"""Compact string columns: many strings held in numpy arrays instead of Python objects.

DataLoader workers read the parent's memory through fork, and touching a Python object
writes its reference count, which copies its page into every worker; numpy buffers are
never written, so memory stays flat however many workers run (LAVIS users saw it grow
with the annotation size). The datasets of `mixkit.data.datasets` keep their records here.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


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
