"""`mixkit eval retrieval` with a `transformers`-saved BLIP retrieval folder: R@k equal those computed from
`transformers`' own ITC cosines and ITM logits ([ENC] first) with the same top-k re-rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, BlipForImageTextRetrieval, BlipImageProcessor

from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.text import clean_caption
from mixkit.eval import retrieval_eval
from mixkit.eval.retrieval import recall_at_k, rerank_with_itm
from mixkit.testing import save_transformers_blip


def test_eval_retrieval_equals_transformers_scores(tmp_path: Path, capsys) -> None:
    root = tmp_path / "shapes"
    write_shapes_dataset(root, ShapesConfig(num_train=1, num_val=4, num_test=0, image_size=32))
    records = json.loads(ShapesPaths.under(root).caption_val.read_text())
    texts = [clean_caption(c) for record in records for c in record["caption"]]
    folder = tmp_path / "blip"
    save_transformers_blip(folder, "BlipForImageTextRetrieval", texts=texts, seed=6)
    out = tmp_path / "out"
    assert retrieval_eval.main(["--model", str(folder), "--records", str(ShapesPaths.under(root).caption_val),
                                "--image-root", str(root), "--output-dir", str(out), "--k-test", "3",
                                "--batch-size", "4", "--split", "val"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())

    model = BlipForImageTextRetrieval.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    pixels = BlipImageProcessor.from_pretrained(str(folder))(
        [Image.open(root / record["image"]) for record in records], return_tensors="pt").pixel_values
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=35, return_tensors="pt")
    itm_ids = tokens.input_ids.clone()
    itm_ids[:, 0] = tokenizer.convert_tokens_to_ids("[ENC]")
    with torch.no_grad():
        sims = torch.cat([model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                pixel_values=pixels[i : i + 1], use_itm_head=False).itm_score for i in range(4)])

        def itm(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return model(input_ids=itm_ids[rows], attention_mask=tokens.attention_mask[rows],
                         pixel_values=pixels[images]).itm_score[:, 1]

        score_i2t, score_t2i = rerank_with_itm(sims, 3, itm)
    txt2img = [index for index, record in enumerate(records) for _ in record["caption"]]
    img2txts = [[t for t, image in enumerate(txt2img) if image == index] for index in range(len(records))]
    expected = recall_at_k(score_i2t, score_t2i, txt2img, img2txts)
    assert metrics["scores"] == pytest.approx(expected)
    assert metrics["itc_scores"] == pytest.approx(recall_at_k(sims, sims.t(), txt2img, img2txts))
