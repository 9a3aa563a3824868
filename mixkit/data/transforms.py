"""Image loading and the BLIP-2 image transforms (eval and train), in PIL + torch.

The eval transform reproduces `transformers.BlipImageProcessor` (square bicubic resize,
rescale by 1/255, CLIP normalisation); the train transform reproduces the LAVIS
`blip2_image_train` processor (RandomResizedCrop + horizontal flip) without torchvision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from PIL import Image

from mixkit.data.image_stats import CLIP_MEAN, CLIP_STD
from mixkit.utils.io import read_json, write_json

# What datasets call on each image: `EvalImageTransform`, `TrainImageTransform` or the user's own.
Transform = Callable[[Image.Image], torch.Tensor]

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# transformers >= 5 saves a Blip2Processor as one composite file with the image
# processor nested under this key, and writes no preprocessor_config.json.
PROCESSOR_CONFIG_NAME = "processor_config.json"
_NESTED_IMAGE_PROCESSOR_KEY = "image_processor"

# PIL.Image.Resampling.BICUBIC; transformers stores the integer in `resample`.
_BICUBIC = 3
_RESCALE_FACTOR = 1 / 255
# RandomResizedCrop's aspect-ratio range in LAVIS (torchvision's default).
_CROP_RATIO = (3 / 4, 4 / 3)
_CROP_ATTEMPTS = 10

# The `BlipImageProcessor` settings our transforms implement and cannot vary: written
# into every config, required of every config read.
_FIXED_SETTINGS: dict[str, Any] = {
    "do_resize": True,
    "resample": _BICUBIC,
    "do_rescale": True,
    "rescale_factor": _RESCALE_FACTOR,
    "do_normalize": True,
    "do_convert_rgb": True,
}
# Values `BlipImageProcessor` assumes when a key is absent from its json (its class
# attributes); a file from an older transformers may omit some of them.
_HF_DEFAULTS: dict[str, Any] = {
    **_FIXED_SETTINGS,
    "image_mean": list(CLIP_MEAN),
    "image_std": list(CLIP_STD),
    "size": {"height": 384, "width": 384},
}


class ImageLoadError(ValueError):
    """An image file that is missing, not an image, or cannot be fully decoded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        # Keep the message on one line so it reads well in logs and dataset reports.
        self.reason = " ".join(str(reason).split())
        super().__init__(f"cannot load image {self.path}: {self.reason}")


@dataclass
class ImageProcessorConfig:
    """Preprocessing of one checkpoint: output size, normalisation, train crop scales."""

    image_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    min_scale: float = 0.5
    max_scale: float = 1.0

    def __post_init__(self) -> None:
        # json gives lists; keep tuples so configs compare equal and stay immutable.
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(
                f"need 0 < min_scale <= max_scale <= 1, got min_scale={self.min_scale}, max_scale={self.max_scale}"
            )

    def to_hf_dict(self) -> dict[str, Any]:
        """The `BlipImageProcessor` json layout, plus our two train-crop keys."""
        return {
            "image_processor_type": "BlipImageProcessor",
            **_FIXED_SETTINGS,
            "size": {"height": self.image_size, "width": self.image_size},
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            # transformers keeps unknown keys as plain attributes, so these are harmless there.
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
        }

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> ImageProcessorConfig:
        """Read a `BlipImageProcessor` json dict; refuse settings our transforms do not implement."""
        merged = {**_HF_DEFAULTS, **data}
        _check_supported(merged)
        return cls(
            image_size=_square_size(merged["size"]),
            mean=tuple(merged["image_mean"]),
            std=tuple(merged["image_std"]),
            # Files written by transformers have no train-crop keys: use the LAVIS defaults.
            min_scale=float(data.get("min_scale", cls.min_scale)),
            max_scale=float(data.get("max_scale", cls.max_scale)),
        )

    def save(self, directory: str | Path) -> Path:
        """Write `preprocessor_config.json` into `directory` and return its path."""
        # Keys sorted, as transformers writes this file ("size" holds height before width already).
        return write_json(Path(directory) / PREPROCESSOR_CONFIG_NAME, dict(sorted(self.to_hf_dict().items())),
                          indent=2)

    @classmethod
    def load(cls, directory: str | Path) -> ImageProcessorConfig:
        """Read ours or transformers' `preprocessor_config.json`, or the nested 5.x `processor_config.json`."""
        directory = Path(directory)
        flat, composite = directory / PREPROCESSOR_CONFIG_NAME, directory / PROCESSOR_CONFIG_NAME
        if flat.is_file():
            return cls.from_hf_dict(read_json(flat, "image processor config"))
        if composite.is_file():
            data = read_json(composite, "processor config")
            if _NESTED_IMAGE_PROCESSOR_KEY in data:
                return cls.from_hf_dict(data[_NESTED_IMAGE_PROCESSOR_KEY])
            raise FileNotFoundError(f"{composite} has no {_NESTED_IMAGE_PROCESSOR_KEY!r} section")
        raise FileNotFoundError(
            f"no {PREPROCESSOR_CONFIG_NAME} or {PROCESSOR_CONFIG_NAME} in {directory}; "
            "save one with ImageProcessorConfig.save or Blip2Processor.save_pretrained"
        )


def _square_size(size: Any) -> int:
    if isinstance(size, int):  # very old configs store one int for a square resize
        return size
    if isinstance(size, dict) and set(size) >= {"height", "width"} and size["height"] == size["width"]:
        return int(size["height"])
    raise ValueError(f"only square {{'height': n, 'width': n}} sizes are supported, got size={size!r}")


def _check_supported(data: dict[str, Any]) -> None:
    for key, value in _FIXED_SETTINGS.items():
        # A json round trip may change the last digits of 1/255.
        same = math.isclose(data[key], value, rel_tol=1e-6) if key == "rescale_factor" else data[key] == value
        if not same:
            raise ValueError(f"unsupported image processor setting {key}={data[key]!r} (mixkit needs {value!r})")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert to RGB, compositing transparency onto white as transformers does.

    A plain `convert("RGB")` (what LAVIS does) would expose whatever colour sits under
    transparent pixels; compositing keeps us equal to `BlipImageProcessor`.
    """
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def decode_image(source: str | Path | BinaryIO, where: str | Path) -> Image.Image:
    """Open and fully decode an image (a path or a byte stream) as RGB; `ImageLoadError` names `where`."""
    try:
        with Image.open(source) as image:
            # Decode now: PIL is lazy, and a truncated file would otherwise fail inside a DataLoader worker.
            image.load()
            return to_rgb(image)
    except Image.UnidentifiedImageError:
        raise ImageLoadError(where, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # PIL reports truncated or corrupt data as OSError (sometimes SyntaxError for bad headers).
        raise ImageLoadError(where, f"cannot decode: {error}") from error


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB; raise `ImageLoadError` instead of failing later."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(path, "file not found")
    return decode_image(path, path)


def to_normalized_tensor(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """RGB PIL image -> float32 [3, H, W], scaled to [0, 1] then normalised per channel."""
    width, height = image.size
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(height, width, 3)
    tensor = pixels.permute(2, 0, 1).to(torch.float32) * _RESCALE_FACTOR
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (tensor - mean_t) / std_t


class EvalImageTransform:
    """PIL image -> normalised [3, S, S] tensor, equal to `BlipImageProcessor` with the same config."""

    def __init__(self, config: ImageProcessorConfig) -> None:
        self.config = config

    def __call__(self, image: Image.Image) -> torch.Tensor:
        size = self.config.image_size
        resized = to_rgb(image).resize((size, size), resample=Image.Resampling.BICUBIC)
        return to_normalized_tensor(resized, self.config.mean, self.config.std)


@dataclass(frozen=True)
class CropBox:
    """A crop in pixel coordinates: top row, left column, height, width."""

    top: int
    left: int
    height: int
    width: int


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator).item())


def _randint(high_exclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(0, high_exclusive, (1,), generator=generator).item())


def sample_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = _CROP_RATIO,
    generator: torch.Generator | None = None,
) -> CropBox:
    """RandomResizedCrop's box sampling (torchvision's `get_params` algorithm).

    Draw an area fraction uniformly in `scale` and an aspect ratio log-uniformly in
    `ratio`; keep the first of 10 draws that fits in the image, else fall back to the
    largest central crop whose aspect ratio is clamped into `ratio`.
    """
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(_CROP_ATTEMPTS):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_low, log_high, generator))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = _randint(height - crop_h + 1, generator)
            left = _randint(width - crop_w + 1, generator)
            return CropBox(top, left, crop_h, crop_w)
    return _central_crop_box(width, height, ratio)


def _central_crop_box(width: int, height: int, ratio: tuple[float, float]) -> CropBox:
    image_ratio = width / height
    if image_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif image_ratio > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return CropBox((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


class TrainImageTransform:
    """LAVIS `blip2_image_train`: RandomResizedCrop(bicubic) + horizontal flip + normalise.

    Pass a seeded `torch.Generator` for reproducible augmentation; without one the global
    torch RNG is used (seeded per DataLoader worker by torch).
    """

    def __init__(self, config: ImageProcessorConfig, generator: torch.Generator | None = None,
                 flip: bool = True) -> None:
        self.config = config
        self.generator = generator
        self.flip = flip  # False: open_clip's train transform (crop only; flips would falsify "on the left")

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """`generator` (per call) overrides the one given at construction: datasets seed it per sample."""
        generator = generator or self.generator
        rgb = to_rgb(image)
        box = sample_crop_box(*rgb.size, scale=(self.config.min_scale, self.config.max_scale), generator=generator)
        # Same order as torchvision (crop, then resize) so pixels match its RandomResizedCrop.
        cropped = rgb.crop((box.left, box.top, box.left + box.width, box.top + box.height))
        size = self.config.image_size
        resized = cropped.resize((size, size), resample=Image.Resampling.BICUBIC)
        if self.flip and torch.rand(1, generator=generator).item() < 0.5:  # RandomHorizontalFlip(p=0.5)
            resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_normalized_tensor(resized, self.config.mean, self.config.std)
