"""`load_pipeline` picks the family from the catalogue or the folder, and one rule decides a checkpoint's
prompt and settings whether it is named by catalogue name or passed as a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image

from mixkit import load_pipeline
from mixkit.models.blip2.reference import reference_settings
from mixkit.models.catalogue import get_checkpoint
from mixkit.models.hub import identify_checkpoint
from mixkit.pipelines.blip2 import Blip2Pipeline
from mixkit.pipelines.blip2_retrieval import Blip2RetrievalPipeline
from mixkit.testing import build_tiny_predictor, build_tiny_stage1, save_transformers_blip2

CAPTION_NAME = "blip2-caption-opt2.7b"  # Hub repo Salesforce/blip2-opt-2.7b-coco, prompt "a photo of"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path) -> None:
    """A fresh MIXKIT_HOME and Hugging Face cache; nothing may download."""
    monkeypatch.setenv("MIXKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for name in ("MIXKIT_ALLOW_DOWNLOAD", "MIXKIT_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf") / "blip2"
    save_transformers_blip2(directory)
    return directory


def into_hf_cache(folder: Path, repo: str) -> Path:
    """Lay `folder` out as the Hugging Face cache holds a downloaded repo: refs/main -> snapshots/<commit>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit


def images() -> list[Image.Image]:
    return [Image.fromarray(np.random.RandomState(i).randint(0, 255, (32, 40, 3), dtype=np.uint8)) for i in range(2)]


def test_catalogue_name_and_its_folder_caption_alike(hf_folder: Path) -> None:
    snapshot = into_hf_cache(hf_folder, "Salesforce/blip2-opt-2.7b-coco")
    by_name = load_pipeline(CAPTION_NAME)
    by_folder = load_pipeline(str(snapshot))
    expected = get_checkpoint(CAPTION_NAME).settings
    assert by_name.settings == by_folder.settings == expected and expected.prompt == "a photo of"
    fast = expected.caption.with_overrides(num_beams=2, max_new_tokens=4)
    assert by_name.caption(images(), settings=fast) == by_folder.caption(images(), settings=fast)


def test_the_folder_a_name_resolves_to_is_that_checkpoint(hf_folder: Path, tmp_path: Path) -> None:
    home_copy = tmp_path / "home" / "checkpoints" / CAPTION_NAME
    shutil.copytree(hf_folder, home_copy)  # what `hf download ... --local-dir` from the README leaves
    assert identify_checkpoint(home_copy) == get_checkpoint(CAPTION_NAME)
    assert load_pipeline(str(home_copy)).settings.prompt == "a photo of"


def test_an_unknown_folder_gets_its_own_or_the_family_settings(hf_folder: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "my-model"
    shutil.copytree(hf_folder, elsewhere)
    assert identify_checkpoint(elsewhere) is None
    assert load_pipeline(str(elsewhere)).settings == reference_settings(encoder_decoder=False)  # no prompt
    saved = build_tiny_predictor(tmp_path / "mixkit-saved", "t5")  # writes mixkit_settings.json
    own = saved.settings.__class__("describe:", saved.settings.vqa_prompt, saved.settings.caption, saved.settings.vqa)
    own.save(tmp_path / "mixkit-saved")
    assert load_pipeline(str(tmp_path / "mixkit-saved")).settings == own


def test_family_and_class_from_the_folder(tmp_path: Path) -> None:
    build_tiny_predictor(tmp_path / "opt", "opt")
    build_tiny_stage1(tmp_path / "stage1")
    assert isinstance(load_pipeline(str(tmp_path / "opt")), Blip2Pipeline)
    stage1 = load_pipeline(str(tmp_path / "stage1"))
    assert isinstance(stage1, Blip2RetrievalPipeline)
    scores = stage1.match(images(), ["a red circle", "a blue square"])
    assert len(scores["itm"]) == 2 and all(0 <= p <= 1 for p in scores["itm"])
    assert all(-1 <= c <= 1 for c in scores["itc"])
    config = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert config["architectures"] == ["Blip2ForImageTextRetrieval"]


def test_a_task_the_checkpoint_cannot_do_and_an_unknown_model_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not do 'caption'"):
        load_pipeline("blip2-stage1", task="caption")
    build_tiny_predictor(tmp_path / "opt", "opt")
    config = json.loads((tmp_path / "opt" / "config.json").read_text())
    config.update(model_type="llava", architectures=["LlavaForConditionalGeneration"])
    (tmp_path / "opt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'llava' is not one mixkit serves"):
        load_pipeline(str(tmp_path / "opt"))


def test_answer_grouped_encodes_each_image_once_and_matches_answer(tmp_path: Path, monkeypatch) -> None:
    pipeline = build_tiny_predictor(tmp_path / "opt", "opt")
    questions = [["what colour?", "how many?", "is it red?"], ["where is it?"]]
    fast = pipeline.settings.vqa.with_overrides(num_beams=2, max_new_tokens=3)
    encoded = []
    original = pipeline.model.encode_image
    monkeypatch.setattr(pipeline.model, "encode_image", lambda pixels: encoded.append(len(pixels)) or original(pixels))
    grouped = pipeline.answer_grouped(images(), questions, fast, question_batch=2)
    assert encoded == [2]
    flat_images = [image for image, asked in zip(images(), questions) for _ in asked]
    flat = pipeline.answer(flat_images, sum(questions, []), fast)
    assert grouped == [flat[:3], flat[3:]]
