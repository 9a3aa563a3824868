"""BLIP through `mixkit predict`: `transformers`-saved folders caption and answer exactly as `transformers` does
(answers once the question starts with [ENC]); catalogue checkpoints get LAVIS's prompt and lengths; answer-list
ranking against a brute-force computation; `predict match` and `predict classify` for BLIP, BLIP-2 and CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import AutoTokenizer, BlipImageProcessor

from mixkit.cli import main
from mixkit.data.text import clean_question
from mixkit.models.blip.reference import CAPTION, CAPTION_PROMPT, TRANSFORMERS_DEFAULT, VQA, lavis_settings
from mixkit.pipelines.auto import load_pipeline
from mixkit.pipelines.blip import BlipPipeline
from mixkit.testing import build_tiny_blip, build_tiny_clip, build_tiny_stage1, save_transformers_blip

QUESTIONS = ["what color is the shape?", "is it large"]


def _folder(tmp_path_factory, architecture: str) -> Path:
    directory = tmp_path_factory.mktemp(architecture)
    save_transformers_blip(directory, architecture, seed=5)
    return directory


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory, "BlipForConditionalGeneration")


@pytest.fixture(scope="module")
def vqa_folder(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory, "BlipForQuestionAnswering")


@pytest.fixture(scope="module")
def retrieval_folder(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory, "BlipForImageTextRetrieval")


def _run_json(capsys, *argv: str) -> list[dict]:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _reference(folder: Path, architecture: str, images: list[Path]):
    model = getattr(transformers, architecture).from_pretrained(str(folder)).eval()
    pixels = BlipImageProcessor.from_pretrained(str(folder))([Image.open(p) for p in images],
                                                             return_tensors="pt").pixel_values
    return model, AutoTokenizer.from_pretrained(str(folder)), pixels


def test_transformers_caption_folder_gives_transformers_greedy_captions(caption_folder: Path, images: list[Path],
                                                                        capsys) -> None:
    records = _run_json(capsys, "predict", "caption", "--model", str(caption_folder), "--image",
                        *map(str, images), "--json")
    model, tokenizer, pixels = _reference(caption_folder, "BlipForConditionalGeneration", images)
    with torch.no_grad():
        expected = tokenizer.batch_decode(model.generate(pixel_values=pixels), skip_special_tokens=True)
    assert [record["caption"] for record in records] == [text.strip() for text in expected]
    assert all(record["caption"] for record in records), "empty captions: a weak comparison"
    pipeline = load_pipeline(str(caption_folder))
    assert pipeline.settings.prompt == "" and pipeline.settings.caption == TRANSFORMERS_DEFAULT


def test_transformers_vqa_folder_answers_as_transformers_with_enc_first(vqa_folder: Path, images: list[Path],
                                                                        capsys) -> None:
    records = _run_json(capsys, "predict", "vqa", "--model", str(vqa_folder), "--image", str(images[0]),
                        "--question", *QUESTIONS, "--json")
    model, tokenizer, pixels = _reference(vqa_folder, "BlipForQuestionAnswering", images[:1])
    expected = []
    for question in QUESTIONS:
        tokens = tokenizer(clean_question(question), return_tensors="pt")  # LAVIS's BlipQuestionProcessor
        tokens.input_ids[:, 0] = tokenizer.convert_tokens_to_ids("[ENC]")
        with torch.no_grad():
            ids = model.generate(input_ids=tokens.input_ids, pixel_values=pixels, attention_mask=tokens.attention_mask)
        expected.append(tokenizer.decode(ids[0], skip_special_tokens=True).strip())
    assert [record["answer"] for record in records] == expected


def test_catalogue_checkpoint_brings_lavis_prompt_and_lengths(tmp_path: Path, images: list[Path],
                                                              monkeypatch, capsys) -> None:
    monkeypatch.setenv("MIXKIT_HOME", str(tmp_path))
    build_tiny_blip(tmp_path / "checkpoints" / "blip-caption-base", "BlipForConditionalGeneration")
    pipeline = load_pipeline("blip-caption-base")
    assert isinstance(pipeline, BlipPipeline)
    assert (pipeline.settings.prompt, pipeline.settings.caption, pipeline.settings.vqa) == (CAPTION_PROMPT, CAPTION, VQA)
    assert pipeline.settings.vqa_prompt == "{}", "BLIP-2's VQA template must never reach BLIP"
    embeds = pipeline.encode_images(images[:1])
    for prompt in (CAPTION_PROMPT, ""):
        ids = pipeline.model.generate(embeds, pipeline.prompt_ids(prompt, 1), **CAPTION.generate_kwargs())
        caption = pipeline.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
        records = _run_json(capsys, "predict", "caption", "--model", "blip-caption-base", "--image", str(images[0]),
                            "--prompt", prompt, "--json")
        assert records[0]["caption"] == caption  # without the prompt: generated tokens only
    assert CAPTION.max_new_tokens == 16 and CAPTION.min_new_tokens == 1  # LAVIS max_len 20 / min_len 5 minus 4


def test_prompt_lengths_count_after_dec_and_prompt(tmp_path: Path, images: list[Path]) -> None:
    pipeline = build_tiny_blip(tmp_path, "BlipForConditionalGeneration")
    embeds = pipeline.encode_images(images[:1])
    ids = pipeline.model.generate(embeds, pipeline.prompt_ids("a small", 1), max_new_tokens=3, min_new_tokens=3)
    assert ids.shape == (1, 3) and pipeline.bos_token_id not in ids.tolist()[0]


def _brute_force_best(pipeline: BlipPipeline, image: Path, question: str, answers: list[str]) -> str:
    """Summed token log-likelihood (label smoothing 0.1, LAVIS's) of every answer; no candidate filter."""
    states, mask = pipeline.encode_questions(pipeline.encode_images([image]), [pipeline.vqa_prompt(question)])
    scores = []
    for answer in answers:
        tokens = pipeline.tokenize([answer], first_token=pipeline.bos_token_id)
        logits = pipeline.model.decoder_logits(states, tokens.input_ids, tokens.attention_mask, mask)
        loss = F.cross_entropy(logits[0, :-1], tokens.input_ids[0, 1:], label_smoothing=0.1, reduction="sum")
        scores.append(-loss.item())
    return answers[max(range(len(answers)), key=scores.__getitem__)]


def test_rank_answers_matches_brute_force_and_filters_by_first_token(tmp_path: Path, images: list[Path],
                                                                     capsys) -> None:
    pipeline = build_tiny_blip(tmp_path / "vqa", "BlipForQuestionAnswering")
    answers = ["red", "blue", "green", "yellow circle", "a large square", "left"]
    ranked = pipeline.rank_answers([images[0]], [QUESTIONS], answers)
    with torch.no_grad():
        assert ranked == [[_brute_force_best(pipeline, images[0], q, answers) for q in QUESTIONS]]
        states, mask = pipeline.encode_questions(pipeline.encode_images(images[:1]), [QUESTIONS[0]])
        start = torch.tensor([[pipeline.bos_token_id]])
        first = pipeline.model.decoder_logits(states, start, torch.ones_like(start), mask)[0, 0]
    first_ids = [pipeline.tokenize([a]).input_ids[0, 1].item() for a in answers]
    likeliest = max(range(len(answers)), key=lambda i: first[first_ids[i]].item())
    assert pipeline.rank_answers([images[0]], [QUESTIONS[:1]], answers, num_candidates=1) == [[answers[likeliest]]]
    answer_file = tmp_path / "answers.json"
    answer_file.write_text(json.dumps(answers))
    records = _run_json(capsys, "predict", "vqa", "--model", str(tmp_path / "vqa"), "--image", str(images[0]),
                        "--question", *QUESTIONS, "--answers", str(answer_file), "--json")
    assert [record["answer"] for record in records] == ranked[0]


def test_batched_answers_equal_single_ones(tmp_path: Path, images: list[Path]) -> None:
    pipeline = build_tiny_blip(tmp_path, "BlipForQuestionAnswering")
    questions = ["what is it", "what color is the large shape on the left"]
    batched = pipeline.answer([images[0], images[1]], questions, settings=VQA)
    single = [pipeline.answer([image], [q], settings=VQA)[0] for image, q in zip(images[:2], questions)]
    assert batched == single


def test_match_and_classify_for_blip_equal_transformers_scores(retrieval_folder: Path, images: list[Path],
                                                               capsys) -> None:
    texts = ["a small red circle on the left", "a large blue square"]
    records = _run_json(capsys, "predict", "match", "--model", str(retrieval_folder), "--image", str(images[0]),
                        str(images[1]), "--text", *texts, "--json")
    model, tokenizer, pixels = _reference(retrieval_folder, "BlipForImageTextRetrieval", images[:2])
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    itm_ids = tokens.input_ids.clone()
    itm_ids[:, 0] = tokenizer.convert_tokens_to_ids("[ENC]")
    with torch.no_grad():
        itm = model(input_ids=itm_ids, pixel_values=pixels, attention_mask=tokens.attention_mask).itm_score
        cosine = model(input_ids=tokens.input_ids, pixel_values=pixels, attention_mask=tokens.attention_mask,
                       use_itm_head=False).itm_score
    torch.testing.assert_close(torch.tensor([r["itm"] for r in records]), itm.softmax(-1)[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor([r["itc"] for r in records]), cosine.diagonal(), atol=1e-5, rtol=0)
    labels = ["circle", "square", "triangle"]
    probs = _run_json(capsys, "predict", "classify", "--model", str(retrieval_folder), "--image", str(images[0]),
                      "--labels", ",".join(labels), "--json")[0]["probs"]
    prompts = tokenizer([f"a photo of a {label}." for label in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        cosines = model(input_ids=prompts.input_ids, pixel_values=pixels[:1].expand(3, -1, -1, -1),
                        attention_mask=prompts.attention_mask, use_itm_head=False).itm_score[0]
    torch.testing.assert_close(torch.tensor(probs), (cosines / 0.07).softmax(-1), atol=1e-5, rtol=0)


def test_match_for_blip2_stage1_and_clip(tmp_path: Path, images: list[Path], capsys) -> None:
    build_tiny_stage1(tmp_path / "stage1")
    build_tiny_clip(tmp_path / "clip")
    for folder, keys in (("stage1", {"image", "text", "itm", "itc"}), ("clip", {"image", "text", "itc"})):
        records = _run_json(capsys, "predict", "match", "--model", str(tmp_path / folder), "--image",
                            str(images[0]), "--text", "a red circle", "a blue square", "--json")
        assert [set(record) for record in records] == [keys, keys]
        assert all(-1 <= record["itc"] <= 1 for record in records)


def test_bad_answers_and_texts_are_usage_errors(vqa_folder: Path, tmp_path: Path, images: list[Path],
                                                capsys) -> None:
    bad = tmp_path / "answers.json"
    bad.write_text('{"not": "a list"}')
    assert main(["predict", "vqa", "--model", str(vqa_folder), "--image", str(images[0]), "--question", "what",
                 "--answers", str(bad)]) == 2
    assert "--answers" in capsys.readouterr().err
    assert main(["predict", "match", "--model", str(vqa_folder), "--image", str(images[0]), str(images[1]),
                 "--text", "a", "b", "c"]) == 2
    assert "--text" in capsys.readouterr().err


def test_lavis_settings_are_the_catalogue_entries() -> None:
    from mixkit.models.catalogue import list_checkpoints

    generative = [entry for entry in list_checkpoints("blip") if entry.settings is not None]
    assert generative and all(entry.settings == lavis_settings() for entry in generative)
