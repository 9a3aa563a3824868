"""BLIP-2 captioning with mixkit's own pipeline, then the caption's noun tags (PaddleMIX's `Blip2CaptionTask`).

`image` (+ optional `blip2_prompt`, default: the checkpoint's own caption prompt) -> `result` (the caption) and
`prompt` (its noun tags joined with ",", which the detection step of `auto_label` reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixkit.apps.appflow.step import Step, StepInputError
from mixkit.apps.appflow.steps.common import state_image
from mixkit.apps.appflow.steps.tagging import tag_prompt


class Blip2CaptionStep(Step):
    reads = ("image",)
    writes = ("result", "prompt")

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from mixkit.pipelines.auto import load_pipeline

        self.pipeline = load_pipeline(str(model_dir), task="caption", device=device)

    def caption(self, images: list, prompt: str | None = None) -> list[str]:
        return self.pipeline.caption(images, prompt=prompt, batch_size=len(images))

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        prompt = state.get("blip2_prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise StepInputError(f"'blip2_prompt' must be a string, got {type(prompt).__name__}")
        (caption,) = self.caption([state_image(state)], prompt)
        return {**state, "result": caption, "prompt": tag_prompt(caption)}
