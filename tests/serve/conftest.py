"""Fixtures shared by the server tests: a tiny BLIP-2 OPT folder and its pipeline, images as files and
bytes, and a client around an app built with chosen options."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server tests need the serve extra: pip install 'mixkit[serve]'")


@pytest.fixture(scope="package")
def tiny_blip2(tmp_path_factory) -> Path:
    from mixkit.testing import build_tiny_predictor

    directory = tmp_path_factory.mktemp("tiny-blip2-opt")
    build_tiny_predictor(directory, "opt")
    return directory


@pytest.fixture(scope="package")
def blip2_pipeline(tiny_blip2: Path):
    from mixkit.pipelines.auto import load_pipeline

    return load_pipeline(str(tiny_blip2))


@pytest.fixture(scope="package")
def image_files(tmp_path_factory) -> list[Path]:
    """Four random PNGs of different sizes."""
    folder = tmp_path_factory.mktemp("serve-images")
    paths = []
    for index, (height, width) in enumerate([(40, 64), (32, 32), (90, 50), (48, 48)]):
        pixels = np.random.RandomState(10 + index).randint(0, 255, (height, width, 3), dtype=np.uint8)
        path = folder / f"image{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def png_bytes(size: tuple[int, int] = (40, 30), seed: int = 0) -> bytes:
    pixels = np.random.RandomState(seed).randint(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def metric_value(text: str, name: str) -> float:
    """The value of an unlabelled series in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


@contextlib.contextmanager
def serving(pipeline, model: str, apps: dict | None = None, **options) -> Iterator:
    """A `TestClient` (httpx, in-process) around an app for `pipeline` (and AppFlow `apps` by name); the worker
    runs while it is open."""
    from fastapi.testclient import TestClient

    from mixkit.serve.app import create_app
    from mixkit.serve.config import ServeConfig

    app = create_app(pipeline, ServeConfig(model=model, **options), apps)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


class LiveServer:
    """`mixkit serve` as a real uvicorn process on a free loopback port; stderr is collected as it comes."""

    def __init__(self, model: str | Path, *options: str, startup_s: float = 180.0) -> None:
        import os
        import re
        import subprocess
        import sys
        import threading

        repo = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mixkit.cli", "serve", "--model", str(model), "--port", "0", *options],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=repo)
        self.lines: list[str] = []
        started = threading.Event()
        self.url = ""

        def read() -> None:
            for line in self.process.stderr:
                self.lines.append(line)
                found = re.search(r"Uvicorn running on (http://\S+)", line)
                if found:
                    self.url = found.group(1)
                    started.set()
            started.set()  # the process ended

        threading.Thread(target=read, daemon=True).start()
        if not started.wait(startup_s) or not self.url:
            self.stop()
            raise RuntimeError(f"mixkit serve did not start:\n{self.log}")

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
