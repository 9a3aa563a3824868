"""Tiny AppFlow checkpoints built once per test session (Grounding DINO, SAM, BLIP-2, Qwen2-VL) and small test
images; import the fixtures into a test module to use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class VisionModels:
    grounding_dino: Path
    sam: Path
    blip2: Path


def shape_image(width: int, height: int, colour: str, offset: int = 0) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20 + offset, 30, 80 + offset, 90), fill=colour)
    draw.rectangle((width - 50, height - 45, width - 10, height - 10), fill="black")
    return image


def blip2_test_settings(directory: Path) -> None:
    """Short greedy captions (the reference's 5 beams x 30 tokens cost seconds per image on a loaded CPU)."""
    from mixkit.models.settings import GenerationSettings, PredictionSettings

    short = GenerationSettings(num_beams=2, max_new_tokens=6, min_new_tokens=1, length_penalty=1.0)
    PredictionSettings(prompt="a", vqa_prompt="Question: {} Answer:", caption=short, vqa=short).save(directory)


@pytest.fixture(scope="session")
def vision_models(tmp_path_factory) -> VisionModels:
    from mixkit.apps.appflow.tiny import build_tiny_grounding_dino, build_tiny_sam
    from mixkit.testing import save_transformers_blip2

    root = tmp_path_factory.mktemp("appflow_models")
    build_tiny_grounding_dino(root / "grounding-dino")
    build_tiny_sam(root / "sam")
    save_transformers_blip2(root / "blip2")
    blip2_test_settings(root / "blip2")
    return VisionModels(root / "grounding-dino", root / "sam", root / "blip2")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("appflow_images")
    shape_image(150, 130, "red").save(folder / "a.png")
    (folder / "sub").mkdir()
    shape_image(140, 160, "blue", offset=10).save(folder / "sub" / "b.jpg")
    return folder
