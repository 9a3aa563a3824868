"""The unit an app is made of: a `Step` runs one model over the shared dictionary.

A step is built once per `Appflow` (its model loaded then) and called for every input. It reads the keys it
needs, adds or replaces keys, and returns the dictionary (PaddleMIX's `AppTask` contract: preprocess, run,
postprocess, kept as one `__call__`). Parameters (`box_threshold`, `guidance_scale`, ...) come in `params`:
the app's defaults with the caller's values on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class StepInputError(ValueError):
    """A key the step needs is missing or has the wrong type; the message names the key."""


class Step:
    reads: ClassVar[tuple[str, ...]] = ()  # keys it needs (checked before it runs)
    writes: ClassVar[tuple[str, ...]] = ()  # keys it adds or replaces

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        self.model_dir = model_dir
        self.device = device
        self.options = options

    def check(self, state: dict[str, Any]) -> None:
        missing = [key for key in self.reads if state.get(key) is None]
        if missing:
            raise StepInputError(f"{type(self).__name__} needs {', '.join(repr(k) for k in missing)}; "
                                 f"got keys {sorted(state)}")

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError
