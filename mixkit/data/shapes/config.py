"""The shapes world's fixed vocabulary (colours, kinds, sizes, grid positions) and `ShapesConfig`."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Shape colours and background colours are disjoint and far apart in RGB, so the
# colour of every pixel names exactly one thing.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
    "white": (235, 235, 235),
}
KINDS: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares",
                           "triangle": "triangles", "cross": "crosses"}
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("solid", "gradient", "noise")
# Half-extent of a shape as a fraction of a grid cell.
SIZE_RADIUS: dict[str, float] = {"small": 0.24, "large": 0.4}

# One shape per cell of a 3x3 grid keeps every position answer unambiguous.
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
MAX_SHAPES_LIMIT = len(COUNT_WORDS) - 1

# VQAv2-style `question_type` prefixes, one per question template family.
QUESTION_TYPES: tuple[str, ...] = (
    "what color is the", "what shape is", "how many", "where is the", "is there a",
)
QUESTIONS_PER_IMAGE_LIMIT = 10  # question ids are image_id * 10 + k
NUM_ANSWERS = 10
NOISY_QUESTION_RATE = 0.2
CAPTION_TEMPLATES = 7

VOCABULARY: frozenset[str] = frozenset(
    "a an and on the in at of is are there what how many where with picture".split()
    + ["shape", "shapes", "background", "color", "yes", "no"]
    + list(SHAPE_COLOURS) + list(BACKGROUND_COLOURS) + list(KINDS) + list(PLURALS.values())
    + list(SIZES) + ["top", "bottom", "left", "right", "center"]
    + list(COUNT_WORDS[1:]) + [str(n) for n in range(MAX_SHAPES_LIMIT + 1)]
)


@dataclass
class ShapesConfig:
    """How many images of which kind to write; validated on construction."""

    num_train: int = 2000
    num_val: int = 200
    num_test: int = 200
    image_size: int = 64
    max_shapes: int = 3
    captions_per_image: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ShapesConfig.{name} must be an int, got {value!r}")
        check(self.num_train >= 1, f"num_train must be >= 1, got {self.num_train}")
        check(self.num_val >= 0 and self.num_test >= 0, "num_val/num_test must be >= 0")
        # Below 32 px a small shape is ~2 px across and its kind is not visible.
        check(self.image_size >= 32, f"image_size must be >= 32, got {self.image_size}")
        check(1 <= self.max_shapes <= MAX_SHAPES_LIMIT,
              f"max_shapes must be in 1..{MAX_SHAPES_LIMIT}, got {self.max_shapes}")
        check(1 <= self.captions_per_image <= CAPTION_TEMPLATES,
              f"captions_per_image must be in 1..{CAPTION_TEMPLATES}, "
              f"got {self.captions_per_image}")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


def check(ok: bool, message: str) -> None:
    """Raise `ValueError(message)` unless `ok`."""
    if not ok:
        raise ValueError(message)
