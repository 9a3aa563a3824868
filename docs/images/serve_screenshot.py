"""Makes docs/images/serve.png: `mixkit serve`'s web page in Chromium, after asking a question about an image.

    python docs/images/serve_screenshot.py [--output docs/images/serve.png]

The model is a tiny random BLIP-2 OPT whose tokenizer knows only a few English words (the word-level tokenizer
of benchmarks/generation_vs_transformers.py without its filler words), so the answer is random but readable;
the image is one scene of mixkit's synthetic shapes set. Needs the serve and test extras and Debian's chromium
(`apt-get install chromium`), as the browser test does.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUESTION = "what colour is the shape?"


def build_model(folder: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from generation_vs_transformers import word_tokenizer

    from mixkit.data.transforms import ImageProcessorConfig
    from mixkit.models.blip2.modeling import Blip2Model
    from mixkit.models.blip2.reference import reference_settings
    from mixkit.models.blip2.tiny import tiny_blip2_config
    from mixkit.pipelines.blip2 import Blip2Pipeline
    from mixkit.testing import randomize_

    tokenizer = word_tokenizer(vocab_size=0)  # no filler words: the prompt's and the questions' words only
    config = tiny_blip2_config("opt", vocab_size=len(tokenizer), image_size=64)
    config.text_config.update({"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 1})  # "\n" stops, as OPT's
    model = randomize_(Blip2Model(config), seed=1, std=0.15)
    Blip2Pipeline(model, tokenizer, ImageProcessorConfig(image_size=64), reference_settings(False)).save_pretrained(
        folder)


def write_image(path: Path) -> None:
    from mixkit.data.shapes.config import ShapesConfig
    from mixkit.data.shapes.scenes import generate_scene, render_scene

    rng = random.Random(3)
    scene = generate_scene(rng, ShapesConfig(image_size=256))
    while len(scene.shapes) < 3:  # the first scene with three shapes: a busier picture
        scene = generate_scene(rng, ShapesConfig(image_size=256))
    render_scene(scene, 256).save(path)


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "mixkit.cli", "serve", "--model", str(model), "--port", "0",
                                "--name", "tiny-random-blip2-opt"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    for line in process.stderr:
        found = re.search(r"Uvicorn running on (http://\S+)", line)
        if found:
            return process, found.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("mixkit serve did not start")


def screenshot(url: str, image: Path, output: Path) -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 960, "height": 640})
        page.goto(url)
        page.set_input_files("#file", str(image))
        page.select_option("#task", "vqa")
        page.fill("#question", QUESTION)
        page.click("#run")
        page.wait_for_function("+document.body.dataset.runs >= 1", timeout=120_000)
        answer = page.text_content("#result")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(output))
        browser.close()
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "serve.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model, image = Path(scratch) / "model", Path(scratch) / "shapes.png"
        build_model(model)
        write_image(image)
        process, url = start_server(model)
        try:
            answer = screenshot(url, image, args.output)
        finally:
            process.terminate()
            process.wait(60)
    print(f"{args.output}: answer {answer!r}")


if __name__ == "__main__":
    main()
