"""What the demo shows while it runs (numbered step lines; each training run's progress comes from
`mixkit.train.progress`) and its phase timer."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


class Progress:
    """Numbered step lines with elapsed time, on stderr."""

    def __init__(self, total_steps: int):
        self.start = time.perf_counter()
        self.total = total_steps
        self.done = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, what: str) -> None:
        self.done += 1
        print(f"[demo {self.elapsed():6.1f}s] {self.done}/{self.total} {what}", file=sys.stderr, flush=True)


class Timer:
    """Seconds per named phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, function: Callable, *args: Any) -> Any:
        start = time.perf_counter()
        result = function(*args)
        self.seconds[name] = time.perf_counter() - start
        return result
