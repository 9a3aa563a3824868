"""What every step shares: the image it reads from the dictionary."""

from __future__ import annotations

from typing import Any

from PIL import Image

from mixkit.apps.appflow.step import StepInputError
from mixkit.data.transforms import ImageLoadError, load_image, to_rgb


def state_image(state: dict[str, Any], key: str = "image") -> Image.Image:
    """`state[key]` as an RGB PIL image: a PIL image, or a file path decoded here."""
    value = state[key]
    if isinstance(value, Image.Image):
        return to_rgb(value)
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        try:
            return load_image(value)
        except ImageLoadError as error:
            raise StepInputError(f"{key!r}: {error}") from None
    raise StepInputError(f"{key!r} must be a PIL image or an image file, got {type(value).__name__}")
