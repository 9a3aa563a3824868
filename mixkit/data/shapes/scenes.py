"""Random scenes (shapes on a 3x3 grid over a background) and how they are drawn."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mixkit.data.shapes.config import (
    BACKGROUND_COLOURS, KINDS, POSITIONS, SHAPE_COLOURS, SIZE_RADIUS, SIZES, TEXTURES, ShapesConfig,
)


@dataclass(frozen=True)
class Shape:
    """One shape; `x`, `y` are its centre as fractions of the image side."""

    kind: str
    colour: str
    size: str
    row: int
    col: int
    x: float
    y: float

    @property
    def position(self) -> str:
        return POSITIONS[(self.row, self.col)]

    def centre_px(self, image_size: int) -> tuple[int, int]:
        return round(self.x * image_size), round(self.y * image_size)


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw an image and to derive every true statement about it."""

    background: str
    texture: str
    texture_seed: int
    shapes: tuple[Shape, ...]  # in reading order (row, then column)


def generate_scene(rng: random.Random, config: ShapesConfig) -> Scene:
    """Draw a random scene: distinct grid cells, so no two shapes overlap."""
    count = rng.randint(1, config.max_shapes)
    cells = sorted(rng.sample(sorted(POSITIONS), count))
    shapes = tuple(_random_shape(rng, row, col) for row, col in cells)
    return Scene(
        background=rng.choice(list(BACKGROUND_COLOURS)),
        texture=rng.choice(TEXTURES),
        texture_seed=rng.randrange(2**32),
        shapes=shapes,
    )


def _random_shape(rng: random.Random, row: int, col: int) -> Shape:
    size = rng.choice(SIZES)
    # Jitter inside the cell, keeping 3% of a cell clear of its border.
    slack = max(0.0, 0.5 - SIZE_RADIUS[size] - 0.03)
    x = (col + 0.5 + rng.uniform(-slack, slack)) / 3
    y = (row + 0.5 + rng.uniform(-slack, slack)) / 3
    return Shape(rng.choice(KINDS), rng.choice(list(SHAPE_COLOURS)), size, row, col, x, y)


def render_scene(scene: Scene, size: int) -> Image.Image:
    """Draw `scene` as a `size` x `size` RGB image; deterministic given the scene."""
    image = _render_background(scene, size)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, size)
    return image


def _render_background(scene: Scene, size: int) -> Image.Image:
    base = BACKGROUND_COLOURS[scene.background]
    if scene.texture == "solid":
        return Image.new("RGB", (size, size), base)
    pixels = np.broadcast_to(np.asarray(base, np.float32), (size, size, 3)).copy()
    rng = np.random.default_rng(scene.texture_seed)
    if scene.texture == "gradient":
        # A gentle ramp (+-20 levels) that never changes which colour name applies.
        ramp = np.linspace(-20.0, 20.0, size, dtype=np.float32)
        pixels += ramp[:, None, None] if rng.random() < 0.5 else ramp[None, :, None]
    else:
        pixels += rng.normal(0.0, 6.0, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, size: int) -> None:
    cx, cy = shape.x * size, shape.y * size
    r = SIZE_RADIUS[shape.size] * size / 3
    fill = SHAPE_COLOURS[shape.colour]
    if shape.kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind == "square":
        h = 0.85 * r  # a slightly smaller square looks as big as the circle
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape.kind == "triangle":
        # Equilateral, centred on its centroid so the centre pixel is inside.
        points = [(cx, cy - r), (cx - 0.87 * r, cy + 0.5 * r), (cx + 0.87 * r, cy + 0.5 * r)]
        draw.polygon(points, fill=fill)
    else:
        arm = 0.3 * r
        draw.rectangle([cx - r, cy - arm, cx + r, cy + arm], fill=fill)
        draw.rectangle([cx - arm, cy - r, cx + arm, cy + r], fill=fill)
