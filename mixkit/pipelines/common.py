"""What every pipeline shares: device and dtype choice, batching, reading image files."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from mixkit.data.transforms import load_image

ImageInput = Image.Image | str | Path  # a decoded image or a file to decode


def pick_device(device: str | torch.device | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def half_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; None on CPU (fp32 there: half precision is slow and lossy)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_images(images: Sequence[ImageInput]) -> list[Image.Image]:
    """PIL images as given, files decoded to RGB (`ImageLoadError` names a bad file)."""
    return [image if isinstance(image, Image.Image) else load_image(image) for image in images]
