"""The picture of a detection / segmentation / labelling result: masks tinted, boxes outlined, each box labelled
with its phrase and score, over the input image."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

# Distinct, readable colours (Tableau 10), cycled per box.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
MASK_OPACITY = 0.45


def tint_masks(image: Image.Image, masks: Sequence[Image.Image]) -> Image.Image:
    """Each mask's pixels blended with its colour (`MASK_OPACITY`)."""
    picture = image.convert("RGB")
    for index, mask in enumerate(masks):
        colour = Image.new("RGB", picture.size, PALETTE[index % len(PALETTE)])
        alpha = mask.convert("L").point(lambda value: round(value * MASK_OPACITY))
        picture = Image.composite(colour, picture, alpha)
    return picture


def caption(label: str, score: float | None) -> str:
    return label if score is None else f"{label} {score:.2f}"


def draw_detections(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] = (),
                    scores: Sequence[float] = (), masks: Sequence[Image.Image] = ()) -> Image.Image:
    """A new RGB image: masks tinted, then each box outlined and captioned (phrase and score) in its colour."""
    picture = tint_masks(image, masks)
    draw = ImageDraw.Draw(picture)
    for index, box in enumerate(boxes):
        colour = PALETTE[index % len(PALETTE)]
        x0, y0, x1, y1 = (float(value) for value in box)
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=colour, width=2)
        label = labels[index] if index < len(labels) else ""
        text = caption(label, scores[index] if index < len(scores) else None)
        if text:
            left, top, right, bottom = draw.textbbox((x0, y0), text)
            draw.rectangle((left, top, right + 2, bottom), fill=colour)
            draw.text((x0 + 1, y0), text, fill=(255, 255, 255))
    return picture
