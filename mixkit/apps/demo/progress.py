"""What the demo shows while it runs (numbered steps, one loss bar per training run) and its phase timer."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm
from transformers import TrainerCallback


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


class LossBar(TrainerCallback):
    """One tqdm bar per training run on stderr, its postfix the last logged loss (the Trainer's own bar
    prints every log dict to stdout)."""

    def __init__(self, name: str):
        self.name = name
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=f"  {self.name}", unit="step", file=sys.stderr, leave=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


class Timer:
    """Seconds per named phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, function: Callable, *args: Any) -> Any:
        start = time.perf_counter()
        result = function(*args)
        self.seconds[name] = time.perf_counter() - start
        return result
