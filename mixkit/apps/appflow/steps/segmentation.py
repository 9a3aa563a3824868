"""Segment Anything through `transformers`: one mask per box.

Masks are exactly `SamProcessor.post_process_masks` of `SamModel`'s output for the box prompts (one mask per box,
`multimask_output=False` as PaddleMIX's `OpenSetSegTask` and Grounded-SAM run SAM for boxes), written as PIL "L"
images of the image's size, 255 inside and 0 outside (PaddleMIX `paddlemix/appflow/openset_det_sam.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mixkit.apps.appflow.step import Step, StepInputError
from mixkit.apps.appflow.steps.common import state_image
from mixkit.pipelines.common import pick_device


def check_boxes(boxes: Any) -> list[list[float]]:
    """Boxes as a list of [x0, y0, x1, y1] floats; anything else is a StepInputError naming 'boxes'."""
    rows = boxes.tolist() if hasattr(boxes, "tolist") else boxes
    if not isinstance(rows, (list, tuple)) or any(not isinstance(row, (list, tuple)) or len(row) != 4
                                                  for row in rows):
        raise StepInputError("'boxes' must be a list of [x0, y0, x1, y1] boxes in pixels")
    return [[float(value) for value in row] for row in rows]


def mask_image(mask: torch.Tensor) -> Image.Image:
    """A boolean [H, W] mask as a PIL "L" image: 255 inside, 0 outside."""
    return Image.fromarray(mask.cpu().numpy().astype(np.uint8) * 255, mode="L")


class SamStep(Step):
    reads = ("image", "boxes")
    writes = ("seg_masks",)

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from transformers import SamModel, SamProcessor

        self.torch_device = pick_device(device)
        self.processor = SamProcessor.from_pretrained(model_dir)
        self.model = SamModel.from_pretrained(model_dir).to(self.torch_device).eval()

    @torch.no_grad()
    def segment(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> list[torch.Tensor]:
        """One boolean [H, W] mask per box, at the image's size."""
        if not boxes:
            return []
        inputs = self.processor(images=image, input_boxes=[[list(box) for box in boxes]], return_tensors="pt")
        outputs = self.model(**inputs.to(self.torch_device), multimask_output=False)
        masks = self.processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                  inputs["reshaped_input_sizes"].cpu())[0]
        return list(masks[:, 0])

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        masks = self.segment(state_image(state), check_boxes(state["boxes"]))
        return {**state, "seg_masks": [mask_image(mask) for mask in masks]}
