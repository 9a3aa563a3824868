"""Zero-shot classification: CLIP equals `transformers`' own logits, BLIP-2 stage-1 uses its ITC logits, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from mixkit.cli import main
from mixkit.pipelines.auto import load_pipeline
from mixkit.pipelines.blip2_retrieval import Blip2RetrievalPipeline
from mixkit.pipelines.clip import ClipPipeline
from mixkit.testing import build_tiny_clip, build_tiny_stage1

LABELS = ["red circle", "blue square", "green triangle"]
TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-clip")
    build_tiny_clip(directory)
    return directory


@pytest.fixture(scope="module")
def stage1_folder(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-stage1")
    build_tiny_stage1(directory)
    return directory



def _classify_json(model: Path, images: list[Path], *extra: str, capsys) -> list[dict]:
    code = main(["predict", "classify", "--model", str(model), "--image", *map(str, images),
                 "--labels", ",".join(LABELS), "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_clip_probs_equal_transformers_logits(clip_folder: Path, images: list[Path], capsys) -> None:
    records = _classify_json(clip_folder, images, "--batch-size", "2", capsys=capsys)
    model = CLIPModel.from_pretrained(str(clip_folder)).eval()
    processor = CLIPProcessor.from_pretrained(str(clip_folder))
    pictures = [Image.open(path).convert("RGB") for path in images]
    inputs = processor(text=[TEMPLATE.format(label) for label in LABELS], images=pictures, padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(-1)
    got = torch.tensor([record["probs"] for record in records])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got.max(-1).values - got.min(-1).values).max() > 0.01, "uniform probabilities: a weak comparison"


def test_load_pipeline_picks_clip_for_a_transformers_folder(clip_folder: Path) -> None:
    pipeline = load_pipeline(str(clip_folder))
    assert isinstance(pipeline, ClipPipeline)
    assert isinstance(load_pipeline(str(clip_folder), task="classify"), ClipPipeline)
    feats = pipeline.text_features(["a red circle", "a cat"])
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2))


def test_cli_json_shape_and_text_lines(clip_folder: Path, images: list[Path], capsys) -> None:
    records = _classify_json(clip_folder, images[:2], capsys=capsys)
    assert [set(r) for r in records] == [{"image", "labels", "probs"}] * 2
    assert [r["image"] for r in records] == [str(p) for p in images[:2]]
    for record in records:
        assert record["labels"] == LABELS and len(record["probs"]) == 3
        assert sum(record["probs"]) == pytest.approx(1.0, abs=1e-5)
    assert main(["predict", "classify", "--model", str(clip_folder), "--image", str(images[0]),
                 "--labels", ",".join(LABELS)]) == 0
    line = capsys.readouterr().out.strip()
    best = max(range(3), key=records[0]["probs"].__getitem__)
    assert line.split("\t")[:2] == [str(images[0]), LABELS[best]]


@pytest.mark.parametrize("options, message", [
    (["--image", "missing.png", "--labels", "a,b"], "missing.png"),
    (["--labels", ""], "--labels"),
    (["--labels", "a,,b"], "--labels"),
    (["--labels", "a,b", "--template", "a photo"], "--template"),
])
def test_bad_input_is_one_line_and_exit_2(clip_folder: Path, images: list[Path], options: list[str],
                                          message: str, capsys) -> None:
    if "--image" not in options:
        options = ["--image", str(images[0]), *options]
    assert main(["predict", "classify", "--model", str(clip_folder), *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert captured.err.startswith("mixkit predict classify: error:")


def test_blip2_stage1_classifies_with_itc_logits(stage1_folder: Path, images: list[Path], capsys) -> None:
    records = _classify_json(stage1_folder, images, capsys=capsys)
    got = torch.tensor([record["probs"] for record in records])
    torch.testing.assert_close(got.sum(-1), torch.ones(len(images)))
    pipeline = load_pipeline(str(stage1_folder), task="classify")
    assert isinstance(pipeline, Blip2RetrievalPipeline)
    tokens = pipeline.tokenize([TEMPLATE.format(label) for label in LABELS])
    text_feats = pipeline.text_features(tokens.input_ids, tokens.attention_mask)
    image_feats = pipeline.image_features(images).image_feats
    with torch.no_grad():
        expected = (pipeline.itc_similarity(image_feats, text_feats) / pipeline.model.temp).softmax(-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
