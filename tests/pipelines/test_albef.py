"""ALBEF through the pipeline layer: `load_pipeline` picks `AlbefPipeline`; `predict classify` / `predict match`;
`mixkit eval retrieval` equals LAVIS's `compute_sim_matrix` written out here (ITC top-k, then the ITM logit of
every layer with [CLS] first plus the raw cosine); VQA answer ranking equals `albef_vqa.py::rank_answers` written
out here; a VQA question without an answer list is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.text import clean_caption
from mixkit.eval import retrieval_eval
from mixkit.eval.retrieval import recall_at_k
from mixkit.pipelines.albef import AlbefPipeline
from mixkit.pipelines.auto import load_pipeline
from mixkit.testing import build_tiny_albef


@pytest.fixture(scope="module")
def retrieval_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("albef")
    build_tiny_albef(folder, "AlbefForRetrieval", seed=3)
    return folder


def test_classify_and_match_commands(retrieval_folder: Path, images, capsys) -> None:
    pipeline = load_pipeline(str(retrieval_folder), task="classify")
    assert isinstance(pipeline, AlbefPipeline)
    labels = ["red circle", "blue square", "green triangle"]
    assert main(["predict", "classify", "--model", str(retrieval_folder), "--image", str(images[0]),
                 str(images[1]), "--labels", ",".join(labels), "--template", "a photo of a {}.", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    model, tokenizer = pipeline.model, pipeline.tokenizer
    tokens = tokenizer([f"a photo of a {label}." for label in labels], padding=True, return_tensors="pt")
    with torch.no_grad():  # softmax over labels of cosine / temp: LAVIS's ITC logits
        image_feat = F.normalize(model.vision_proj(model.encode_image(pipeline.preprocess(images[:2]))[:, 0]), dim=-1)
        text_feat = F.normalize(model.text_proj(model.text_encoder.text(tokens.input_ids,
                                                                        tokens.attention_mask)[:, 0]), dim=-1)
        expected = (image_feat @ text_feat.t() / model.temp).softmax(-1)
    assert [record["labels"] for record in records] == [labels, labels]
    torch.testing.assert_close(torch.tensor([record["probs"] for record in records]), expected, rtol=1e-5, atol=1e-6)

    assert main(["predict", "match", "--model", str(retrieval_folder), "--image", str(images[0]), "--text",
                 "a small red circle", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert set(record) == {"image", "text", "itm", "itc"} and 0 < record["itm"] < 1 and -1 <= record["itc"] <= 1


def test_eval_retrieval_equals_lavis_compute_sim_matrix(retrieval_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    write_shapes_dataset(root, ShapesConfig(num_train=1, num_val=4, num_test=0, image_size=32))
    records = json.loads(ShapesPaths.under(root).caption_val.read_text())
    out = tmp_path / "out"
    assert retrieval_eval.main(["--model", str(retrieval_folder), "--records", str(ShapesPaths.under(root).caption_val),
                                "--image-root", str(root), "--output-dir", str(out), "--k-test", "3",
                                "--batch-size", "4", "--split", "val"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())

    pipeline = AlbefPipeline.from_pretrained(retrieval_folder, device="cpu")
    model, k = pipeline.model, 3
    texts = [clean_caption(c) for record in records for c in record["caption"]]
    text_input = pipeline.tokenizer(texts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():  # lavis/models/albef_models/__init__.py::compute_sim_matrix, line by line
        text_embeds = F.normalize(model.text_proj(model.text_encoder.text(text_input.input_ids,
                                                                          text_input.attention_mask)[:, 0, :]))
        image_feats = model.encode_image(pipeline.preprocess([root / record["image"] for record in records]))
        image_embeds = F.normalize(model.vision_proj(image_feats[:, 0, :]), dim=-1)
        sims_matrix = image_embeds @ text_embeds.t()

        def itm(image_rows, text_rows):
            hidden, _ = model.text_encoder(text_input.input_ids[text_rows],
                                           text_input.attention_mask[text_rows], source=image_feats[image_rows])
            return model.itm_head(hidden[:, 0, :])[:, 1]

        score_i2t = torch.full((len(records), len(texts)), -100.0)
        for i, sims in enumerate(sims_matrix):
            topk_sim, topk_idx = sims.topk(k=k, dim=0)
            score_i2t[i, topk_idx] = itm(torch.full((k,), i), topk_idx) + topk_sim
        score_t2i = torch.full((len(texts), len(records)), -100.0)
        for i, sims in enumerate(sims_matrix.t()):
            topk_sim, topk_idx = sims.topk(k=k, dim=0)
            score_t2i[i, topk_idx] = itm(topk_idx, torch.full((k,), i)) + topk_sim
    txt2img = [index for index, record in enumerate(records) for _ in record["caption"]]
    img2txts = [[t for t, image in enumerate(txt2img) if image == index] for index in range(len(records))]
    assert metrics["scores"] == pytest.approx(recall_at_k(score_i2t, score_t2i, txt2img, img2txts))
    assert metrics["itc_scores"] == pytest.approx(recall_at_k(sims_matrix, sims_matrix.t(), txt2img, img2txts))


def test_vqa_ranks_answers_as_lavis(tmp_path: Path, images, capsys) -> None:
    folder = tmp_path / "albef-vqa"
    pipeline = build_tiny_albef(folder, "AlbefForQuestionAnswering", seed=5)
    answers = ["red", "blue circle", "a small square", "left"]
    questions = ["what color is the shape?", "where is it?"]
    ranked = pipeline.rank_answers([images[0], images[1]], [[questions[0]], [questions[1]]], answers)
    model, tokenizer = pipeline.model, pipeline.tokenizer
    answer_tokens = tokenizer(answers, padding="longest", return_tensors="pt")
    question_tokens = tokenizer(questions, padding="longest", truncation=True, max_length=25, return_tensors="pt")
    expected = []
    with torch.no_grad():  # albef_vqa.py::rank_answers with every answer a candidate (k = 4)
        states = model.text_encoder(question_tokens.input_ids, question_tokens.attention_mask,
                                    source=model.encode_image(pipeline.preprocess(images[:2])))[0]
        for row in range(2):
            source = states[row : row + 1].expand(4, -1, -1)
            source_mask = question_tokens.attention_mask[row : row + 1].expand(4, -1)
            logits = model.text_decoder(answer_tokens.input_ids, answer_tokens.attention_mask, source, source_mask)[0]
            targets = answer_tokens.input_ids.masked_fill(answer_tokens.input_ids == tokenizer.pad_token_id, -100)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1),
                                   reduction="none", label_smoothing=0.1).view(4, -1).sum(1)
            expected.append(answers[int((-loss).argmax())])
    assert [group[0] for group in ranked] == expected
    assert main(["predict", "vqa", "--model", str(folder), "--image", str(images[0]), "--question", "what is it?"]) == 2
    assert "give --answers FILE" in capsys.readouterr().err
