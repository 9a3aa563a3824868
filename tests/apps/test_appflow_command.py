"""`mixkit app list` / `mixkit app run`: the contract's names, JSON keys, files and errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from mixkit import Appflow
from mixkit.apps.appflow.options import AppUsageError, parse_app_options
from mixkit.cli import main
from tests.apps.appflow_models import shape_image


def test_app_options_take_the_apps_names_and_types() -> None:
    params = {"box_threshold": 0.3, "num_inference_steps": 50, "flag": False, "negative_prompt": None,
              "height": None}
    values, extra = parse_app_options(
        ["--box_threshold", "0.35", "--num-inference-steps=7", "--flag", "true", "--negative_prompt", "123",
         "--height", "64", "--blip2_prompt", "a photo of"], params, ("image", "prompt", "blip2_prompt"))
    assert values == {"box_threshold": 0.35, "num_inference_steps": 7, "flag": True, "negative_prompt": "123",
                      "height": 64}
    assert extra == {"blip2_prompt": "a photo of"}
    with pytest.raises(AppUsageError, match="unknown option --guidance_scale; this app takes: --box_threshold"):
        parse_app_options(["--guidance_scale", "7"], {"box_threshold": 0.3}, ("image",))
    with pytest.raises(AppUsageError, match="--num_inference_steps: invalid literal"):
        parse_app_options(["--num_inference_steps", "many"], params, ())
    with pytest.raises(AppUsageError, match="--box_threshold: a value is needed"):
        parse_app_options(["--box_threshold"], params, ())


def test_app_list(capsys) -> None:
    assert main(["app", "list", "--json"]) == 0
    apps = {app["app"]: app for app in json.loads(capsys.readouterr().out)}
    assert apps["auto_label"]["inputs"] == ["image", "blip2_prompt"]
    assert apps["image2text_generation"]["stages"][0]["default"] == "blip2-caption-opt2.7b"
    assert main(["app", "list"]) == 0
    table = capsys.readouterr().out
    assert "IDEA-Research/grounding-dino-tiny (default)" in table and "--box_threshold 0.3" in table


def test_app_run_openset_det_sam_json(vision_models, tmp_path, capsys) -> None:
    image_path = tmp_path / "in.png"
    shape_image(150, 130, "red").save(image_path)
    code = main(["app", "run", "openset_det_sam", "--models", str(vision_models.grounding_dino),
                 str(vision_models.sam), "--image", str(image_path), "--prompt", "Circle", "--box_threshold",
                 "0.35", "--output", str(tmp_path / "out"), "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    task = Appflow(app="openset_det_sam", models=[str(vision_models.grounding_dino), str(vision_models.sam)])
    expected = task(image=Image.open(image_path), prompt="Circle", box_threshold=0.35)
    assert record["boxes"] == expected["boxes"] and record["labels"] == expected["labels"]
    assert record["scores"] == expected["scores"]
    assert len(record["seg_masks"]) == len(record["boxes"]) > 0
    for path, mask in zip(record["seg_masks"], expected["seg_masks"]):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(mask))
    picture = Image.open(record["picture"])
    assert picture.size == (150, 130)
    assert set(record["files"]) == {*record["seg_masks"], record["picture"]}


def test_app_run_usage_errors(vision_models, tmp_path, capsys) -> None:
    models = ["--models", str(vision_models.grounding_dino), str(vision_models.sam)]
    assert main(["app", "run", "openset_det_sam", *models, "--image", str(tmp_path / "none.png"), "--prompt", "x",
                 "--output", str(tmp_path)]) == 2
    assert "--image" in capsys.readouterr().err
    image_path = tmp_path / "in.png"
    shape_image(150, 130, "red").save(image_path)
    assert main(["app", "run", "openset_det_sam", *models, "--image", str(image_path), "--guidance_scale", "3",
                 "--output", str(tmp_path)]) == 2
    assert "unknown option --guidance_scale" in capsys.readouterr().err
    assert main(["app", "run", "openset_det_sam", *models, "--image", str(image_path), "--seed", "1",
                 "--output", str(tmp_path)]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main(["app", "run", "no_such_app", "--output", str(tmp_path)]) == 2
    assert "unknown app 'no_such_app'" in capsys.readouterr().err


def test_missing_extra_names_it(vision_models, tmp_path, capsys, monkeypatch) -> None:
    from mixkit.apps.appflow.steps import tagging

    monkeypatch.setitem(sys.modules, "spacy", None)  # as if spaCy were not installed
    tagging._tagger.cache_clear()
    image_path = tmp_path / "in.png"
    shape_image(150, 130, "red").save(image_path)
    try:
        code = main(["app", "run", "image2text_generation", "--models", str(vision_models.blip2), "--image",
                     str(image_path), "--output", str(tmp_path / "out")])
    finally:
        tagging._tagger.cache_clear()
    assert code == 2
    assert 'pip install "mixkit[apps]"' in capsys.readouterr().err
