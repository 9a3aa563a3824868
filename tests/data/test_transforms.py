"""Image transforms: parity with transformers' BlipImageProcessor, train augmentation, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import BlipImageProcessor, Blip2Processor

from mixkit.data.tokenizers import train_opt_tokenizer
from mixkit.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    CropBox,
    EvalImageTransform,
    ImageLoadError,
    ImageProcessorConfig,
    TrainImageTransform,
    load_image,
    sample_crop_box,
)


def _random_bytes(n: int, seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return bytes(torch.randint(0, 256, (n,), dtype=torch.uint8, generator=generator).tolist())


def _random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """Random pixels in `mode`; P images get a random palette and one transparent index."""
    channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 1}[mode]
    image = Image.frombytes(mode, (width, height), _random_bytes(width * height * channels, seed))
    if mode == "P":
        image.putpalette(_random_bytes(768, seed + 1))
        image.info["transparency"] = 7
    return image


def _hf_pixels(directory: Path, image: Image.Image) -> torch.Tensor:
    processor = BlipImageProcessor.from_pretrained(str(directory))
    return processor(image, return_tensors="pt")["pixel_values"][0]


# ---------------------------------------------------------------- eval parity


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
@pytest.mark.parametrize(("width", "height"), [(37, 53), (300, 170), (224, 224)])
def test_eval_transform_matches_blip_image_processor(tmp_path: Path, mode: str, width: int, height: int) -> None:
    config = ImageProcessorConfig(image_size=224)
    config.save(tmp_path)
    image = _random_image(mode, width, height, seed=width * height)
    ours = EvalImageTransform(config)(image)
    assert ours.shape == (3, 224, 224) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, _hf_pixels(tmp_path, image), atol=1e-5, rtol=0)


def test_eval_parity_with_custom_size_and_normalisation(tmp_path: Path) -> None:
    config = ImageProcessorConfig(image_size=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    config.save(tmp_path)
    image = _random_image("RGB", 120, 90, seed=3)
    torch.testing.assert_close(EvalImageTransform(config)(image), _hf_pixels(tmp_path, image), atol=1e-5, rtol=0)


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (8, 8), (10, 20, 30, 0))  # fully transparent dark pixels
    pixels = EvalImageTransform(ImageProcessorConfig(image_size=8))(image)
    white = (1.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(pixels[:, 3, 3], white)


# ---------------------------------------------------------------- config


def test_config_save_load_round_trip(tmp_path: Path) -> None:
    config = ImageProcessorConfig(image_size=364, min_scale=0.3, max_scale=0.9)
    path = config.save(tmp_path)
    assert path.name == "preprocessor_config.json"
    assert json.loads(path.read_text())["size"] == {"height": 364, "width": 364}
    assert ImageProcessorConfig.load(tmp_path) == config


def test_load_flat_config_written_by_transformers(tmp_path: Path) -> None:
    BlipImageProcessor(size={"height": 96, "width": 96}, image_mean=[0.1, 0.2, 0.3]).save_pretrained(str(tmp_path))
    config = ImageProcessorConfig.load(tmp_path)
    assert config == ImageProcessorConfig(image_size=96, mean=(0.1, 0.2, 0.3), std=CLIP_STD)


def test_load_nested_config_written_by_blip2_processor(tmp_path: Path) -> None:
    tokenizer = train_opt_tokenizer(["a cat on a mat", "two dogs"] * 5, tmp_path / "tok", vocab_size=270)
    image_processor = BlipImageProcessor(size={"height": 160, "width": 160})
    Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=4).save_pretrained(
        str(tmp_path / "proc")
    )
    # transformers 5.x nests the image processor in processor_config.json; 4.x wrote a flat file.
    assert not (tmp_path / "proc" / "preprocessor_config.json").exists()
    assert ImageProcessorConfig.load(tmp_path / "proc").image_size == 160


def test_load_refuses_settings_it_cannot_reproduce(tmp_path: Path) -> None:
    data = ImageProcessorConfig().to_hf_dict() | {"do_normalize": False}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="do_normalize"):
        ImageProcessorConfig.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        ImageProcessorConfig.load(tmp_path / "missing")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 0},
        {"mean": (0.5, 0.5)},
        {"std": (1.0, 0.0, 1.0)},
        {"min_scale": 0.0},
        {"min_scale": 0.9, "max_scale": 0.5},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ImageProcessorConfig(**kwargs)


# ---------------------------------------------------------------- train transform


def test_train_transform_shape_and_determinism() -> None:
    config = ImageProcessorConfig(image_size=48)
    image = _random_image("RGB", 100, 70, seed=0)

    def run(seed: int) -> torch.Tensor:
        return TrainImageTransform(config, torch.Generator().manual_seed(seed))(image)

    first = run(0)
    assert first.shape == (3, 48, 48) and first.dtype == torch.float32
    torch.testing.assert_close(run(0), first, rtol=0, atol=0)
    assert any(not torch.equal(run(seed), first) for seed in range(1, 4))


def test_train_transform_flips_about_half_the_time() -> None:
    # scale=(1, 1) on a square image always crops the whole image, so the only randomness left is the flip.
    config = ImageProcessorConfig(image_size=32, min_scale=1.0, max_scale=1.0)
    image = _random_image("RGB", 32, 32, seed=5)
    plain = EvalImageTransform(config)(image)
    transform = TrainImageTransform(config, torch.Generator().manual_seed(0))
    outputs = [transform(image) for _ in range(40)]
    flipped = sum(torch.allclose(out, plain.flip(-1)) for out in outputs)
    unflipped = sum(torch.allclose(out, plain) for out in outputs)
    assert flipped + unflipped == len(outputs)
    assert 8 <= flipped <= 32


@pytest.mark.parametrize(
    ("width", "height", "scale"), [(640, 480, (0.5, 1.0)), (300, 900, (0.08, 0.4)), (500, 500, (0.2, 0.4))]
)
def test_crop_boxes_respect_scale_ratio_and_bounds(width: int, height: int, scale: tuple[float, float]) -> None:
    generator = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(300):
        box = sample_crop_box(width, height, scale=scale, generator=generator)
        assert 0 <= box.top and box.top + box.height <= height
        assert 0 <= box.left and box.left + box.width <= width
        # Rounding w and h to whole pixels moves the area and ratio by a little under 1 % here.
        area = box.width * box.height / (width * height)
        assert scale[0] * 0.99 <= area <= scale[1] * 1.01
        assert 3 / 4 * 0.99 <= box.width / box.height <= 4 / 3 * 1.01
        areas.append(area)
    # The sampled areas should cover the scale range, not sit at one value.
    assert max(areas) - min(areas) > 0.5 * (scale[1] - scale[0])


def test_crop_falls_back_to_central_crop_when_nothing_fits() -> None:
    # A 1000x10 strip: no crop with ratio <= 4/3 can cover half the area, so all 10 draws fail.
    box = sample_crop_box(1000, 10, scale=(0.5, 1.0), generator=torch.Generator().manual_seed(0))
    assert box == CropBox(top=0, left=(1000 - 13) // 2, height=10, width=round(10 * 4 / 3))
    tall = sample_crop_box(10, 1000, scale=(0.5, 1.0), generator=torch.Generator().manual_seed(0))
    assert tall == CropBox(top=(1000 - 13) // 2, left=0, height=round(10 / (3 / 4)), width=10)


# ---------------------------------------------------------------- load_image


def test_load_image_returns_decoded_rgb(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    _random_image("RGBA", 20, 10, seed=1).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (20, 10)


def _assert_one_line_error(path: Path, match: str) -> None:
    with pytest.raises(ImageLoadError, match=match) as info:
        load_image(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_image_missing_file(tmp_path: Path) -> None:
    _assert_one_line_error(tmp_path / "nope.jpg", "not found")


def test_load_image_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are\nnot pixels\n")
    _assert_one_line_error(path, "not a recognised image")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_image_truncated(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"cut.{fmt.lower()}"
    _random_image("RGB", 64, 64, seed=2).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as lazy:  # the header still parses: only a full decode finds the damage
        assert lazy.size == (64, 64)
    _assert_one_line_error(path, "cannot decode")
