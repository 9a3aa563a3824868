"""Open-set detection with Grounding DINO through `transformers`: boxes for the phrases of a text prompt.

The prompt is lower-cased and ends with "." as Grounding DINO's own code expects (IDEA-Research/GroundingDINO
`groundingdino/util/inference.py::preprocess_caption`; PaddleMIX's `GroundingDinoTask` does the same).
Boxes are exactly what `GroundingDinoProcessor.post_process_grounded_object_detection` returns: float pixels
[x0, y0, x1, y1], neither rounded nor clipped. `labels` are the phrases alone, `scores` a separate list (PaddleMIX
appends the score to the phrase). Thresholds default to PaddleMIX's: box_threshold 0.3, text_threshold 0.25.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mixkit.apps.appflow.step import Step, StepInputError
from mixkit.apps.appflow.steps.common import state_image
from mixkit.pipelines.common import pick_device

BOX_THRESHOLD = 0.3  # PaddleMIX appflow GroundingDinoTask default
TEXT_THRESHOLD = 0.25


def detection_prompt(prompt: str) -> str:
    """"Circle" -> "circle.": lower-cased, stripped, ending with a full stop."""
    text = prompt.lower().strip()
    if not text:
        raise StepInputError("'prompt': the detection prompt is empty")
    return text if text.endswith(".") else text + "."


@dataclass
class Detections:
    boxes: list[list[float]]  # [x0, y0, x1, y1] in pixels of the original image
    labels: list[str]
    scores: list[float]


class GroundingDinoStep(Step):
    reads = ("image", "prompt")
    writes = ("boxes", "labels", "scores")

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        self.torch_device = pick_device(device)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = GroundingDinoForObjectDetection.from_pretrained(model_dir).to(self.torch_device).eval()

    @torch.no_grad()
    def detect(self, image: Image.Image, prompt: str, box_threshold: float = BOX_THRESHOLD,
               text_threshold: float = TEXT_THRESHOLD) -> Detections:
        inputs = self.processor(images=image, text=detection_prompt(prompt), return_tensors="pt")
        outputs = self.model(**inputs.to(self.torch_device))
        result = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[(image.height, image.width)])[0]
        return Detections(result["boxes"].cpu().tolist(), list(result["text_labels"]), result["scores"].cpu().tolist())

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(state["prompt"], str):
            raise StepInputError(f"'prompt' must be a string, got {type(state['prompt']).__name__}")
        found = self.detect(state_image(state), state["prompt"], params.get("box_threshold", BOX_THRESHOLD),
                            params.get("text_threshold", TEXT_THRESHOLD))
        return {**state, "boxes": found.boxes, "labels": found.labels, "scores": found.scores}
