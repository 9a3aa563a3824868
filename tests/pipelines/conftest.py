"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three random images of mixed sizes (batched and single predictions must agree on them)."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, (height, width) in enumerate([(40, 64), (32, 32), (90, 50)]):
        pixels = np.random.RandomState(index).randint(0, 255, (height, width, 3), dtype=np.uint8)
        path = folder / f"image{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
