"""Training progress on stderr: one bar per run on a terminal, plain lines in logs (`mixkit.utils.progress`).

Replaces the Trainer's own `ProgressCallback` (a tqdm bar whatever the stream) and `PrinterCallback` (every
log dict printed to stdout): the postfix carries the last logged loss, learning rate and samples/s.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from mixkit.utils.progress import progress_bar

POSTFIX_FORMATS = {"loss": ".4f", "learning_rate": ".2e", "samples_per_second": ".1f"}
POSTFIX_NAMES = {"loss": "loss", "learning_rate": "lr", "samples_per_second": "samples/s"}


class TrainingProgress(TrainerCallback):
    def __init__(self, name: str = "train"):
        self.name = name
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            # A resumed run starts part-way.
            self.bar = progress_bar(total=state.max_steps, desc=self.name, unit="step", initial=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(**{POSTFIX_NAMES[key]: format(logs[key], POSTFIX_FORMATS[key])
                                    for key in POSTFIX_FORMATS if key in logs})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
