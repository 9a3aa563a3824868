"""`mixkit eval retrieval` with CLIP and EVA-CLIP (ITC only): recall equals the one computed from `transformers`'
own CLIPModel similarities on the same shapes gallery."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, generate_scene, render_scene, scene_captions
from mixkit.data.text import clean_caption
from mixkit.eval.retrieval import recall_at_k
from mixkit.testing import build_tiny_clip, build_tiny_eva_clip


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gallery")
    rng = random.Random(1)
    records = []
    for index in range(6):
        scene = generate_scene(rng, ShapesConfig(max_shapes=2))
        render_scene(scene, 32).save(folder / f"{index}.png")
        records.append({"image": f"{index}.png", "caption": scene_captions(scene, rng, num=2), "image_id": index})
    (folder / "records.json").write_text(json.dumps(records))
    return folder


def _run(model: Path, gallery: Path, out: Path, capsys) -> dict:
    capsys.readouterr()  # what building the model printed
    code = main(["eval", "retrieval", "--model", str(model), "--records", str(gallery / "records.json"),
                 "--image-root", str(gallery), "--output-dir", str(out), "--batch-size", "4"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_clip_retrieval_equals_transformers_similarities(gallery: Path, tmp_path: Path, capsys) -> None:
    build_tiny_clip(tmp_path / "clip")
    metrics = _run(tmp_path / "clip", gallery, tmp_path / "out", capsys)
    records = json.loads((gallery / "records.json").read_text())
    texts = [clean_caption(c) for r in records for c in r["caption"]]
    txt2img = [i for i, r in enumerate(records) for _ in r["caption"]]
    img2txts = [[t for t, i in enumerate(txt2img) if i == image] for image in range(len(records))]
    model = CLIPModel.from_pretrained(str(tmp_path / "clip")).eval()
    processor = CLIPProcessor.from_pretrained(str(tmp_path / "clip"))
    pictures = [Image.open(gallery / r["image"]).convert("RGB") for r in records]
    with torch.no_grad():
        sims = model(**processor(text=texts, images=pictures, padding=True, return_tensors="pt")).logits_per_image
    expected = recall_at_k(sims, sims.t(), txt2img, img2txts)
    assert metrics["scores"] == pytest.approx(expected) and metrics["itc_scores"] == metrics["scores"]
    assert metrics["reranked"] is False and (metrics["num_images"], metrics["num_texts"]) == (6, 12)
    result = json.loads((tmp_path / "out" / "test_retrieval_result.json").read_text())
    assert len(result["images"]) == 6 and len(result["texts"]) == 12


def test_eva_clip_retrieval_runs(gallery: Path, tmp_path: Path, capsys) -> None:
    build_tiny_eva_clip(tmp_path / "eva")
    metrics = _run(tmp_path / "eva", gallery, tmp_path / "out", capsys)
    assert set(metrics["scores"]) >= {"txt_r1", "img_r1", "r_mean"} and metrics["reranked"] is False
    assert 0.0 <= metrics["scores"]["r_mean"] <= 100.0
