"""Progress that suits where it goes: a live tqdm bar on a terminal, plain lines anywhere else.

A tqdm bar redraws itself with carriage returns; written into a CI log, a `nohup` file or a job scheduler's
output that leaves thousands of `\\r` fragments on one line. `progress_bar` returns tqdm when the stream is a
terminal and otherwise a `LineProgress`, which has the same small interface (iterate, `update`,
`set_postfix`, `close`, `with`) and writes one plain line every `MIXKIT_PROGRESS_SECONDS` (default 30)
seconds, and a last one when it closes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

DEFAULT_INTERVAL_SECONDS = 30.0


def line_interval() -> float:
    return float(os.environ.get("MIXKIT_PROGRESS_SECONDS", DEFAULT_INTERVAL_SECONDS))


class LineProgress:
    """tqdm's interface, printing `desc: n/total (pct) [elapsed, rate] postfix` lines at an interval."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", file: IO[str] | None = None, interval: float | None = None):
        self.iterable, self.desc, self.unit = iterable, desc.strip(), unit
        self.total = total if total is not None else _length(iterable)
        self.file = file or sys.stderr
        self.interval = line_interval() if interval is None else interval
        self.n, self.postfix = 0, ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{name}={value}" for name, value in values.items())

    def write(self) -> None:
        elapsed = time.monotonic() - self.start
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else str(self.n)
        rate = f"{self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} [{elapsed:.0f}s, {rate}]{postfix}", file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.write()


def _length(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, file: IO[str] | None = None, **tqdm_options: Any) -> Any:
    """A tqdm bar on a terminal, a `LineProgress` elsewhere; `disable` gives a silent tqdm."""
    stream = file or sys.stderr
    if disable or stream.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream, **tqdm_options)
    line = LineProgress(iterable, total=total, desc=desc, unit=unit, file=stream)
    line.n = tqdm_options.get("initial", 0)
    return line
