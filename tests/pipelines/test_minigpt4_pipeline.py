"""MiniGPT-4 / MiniGPT-v2 pipelines: found by load_pipeline, generation equal to the official procedure written
out by hand (segment-wise embeddings, zero-vector left padding), multi-turn chat with history and streaming,
and `mixkit predict caption|vqa` on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mixkit.cli import main
from mixkit.models.minigpt4.templates import conversation_prompt
from mixkit.models.settings import GenerationSettings
from mixkit.pipelines.auto import family_and_task, load_pipeline
from mixkit.pipelines.chat import ChatPipeline, ChatTurn
from mixkit.models.minigpt4.modeling import left_padded
from mixkit.pipelines.minigpt4 import MiniGPT4Pipeline
from mixkit.testing import build_tiny_minigpt4

SHORT = GenerationSettings(num_beams=1, max_new_tokens=8, min_new_tokens=0, length_penalty=1.0,
                           repetition_penalty=1.05)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for variant in ("vicuna0", "minigptv2"):
        out[variant] = tmp_path_factory.mktemp(variant)
        build_tiny_minigpt4(out[variant], variant, seed=1)
    return out


def official_generate(pipeline: MiniGPT4Pipeline, image, prompt: str, settings: GenerationSettings) -> str:
    """get_context_emb + llama_model.generate + Chat.answer's cleaning, written out for one row."""
    tokenizer, model = pipeline.tokenizer, pipeline.model
    segments = prompt.split("<ImageHere>")
    embed = model.language_model.get_input_embeddings()
    image_tokens = pipeline.encode_images([image])
    parts = []
    for index, segment in enumerate(segments):
        ids = tokenizer(segment, return_tensors="pt", add_special_tokens=index == 0).input_ids
        parts.append(embed(ids))
        if index < len(segments) - 1:
            parts.append(image_tokens)
    embeds = torch.cat(parts, dim=1)
    with torch.no_grad():
        out = model.language_model.generate(inputs_embeds=embeds, max_new_tokens=settings.max_new_tokens,
                                            num_beams=1, do_sample=False,
                                            repetition_penalty=settings.repetition_penalty,
                                            stopping_criteria=pipeline._generation_kwargs(settings).get(
                                                "stopping_criteria"),
                                            pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0], skip_special_tokens=True)
    return text.split("###")[0].split("Assistant:")[-1].strip()


def test_load_pipeline_finds_the_family(folders) -> None:
    assert family_and_task(str(folders["vicuna0"])) == ("minigpt4", "chat")
    for task in ("chat", "caption", "vqa", "grounding"):
        assert isinstance(load_pipeline(str(folders["minigptv2"]), task=task), MiniGPT4Pipeline)
    assert isinstance(load_pipeline(str(folders["vicuna0"])), ChatPipeline)


@pytest.mark.parametrize("variant", ["vicuna0", "minigptv2"])
def test_chat_with_history_equals_the_official_procedure(folders, images, variant: str) -> None:
    pipeline = load_pipeline(str(folders[variant]))
    turns = [ChatTurn("user", "what is it?"), ChatTurn("assistant", "a red circle"), ChatTurn("user", "where?")]
    pieces: list[str] = []
    response = pipeline.chat(images[0], turns, SHORT, on_text=pieces.append)
    prompt = conversation_prompt(pipeline.template, [(t.role, t.text) for t in turns])
    assert "a red circle" in prompt and prompt.count("<ImageHere>") == 1
    assert response == official_generate(pipeline, images[0], prompt, SHORT)
    assert "".join(pieces).strip() == response  # streamed pieces add up to the answer
    single = pipeline.respond([images[1]], ["what is it?"], SHORT)
    assert single == [official_generate(pipeline, images[1], conversation_prompt(
        pipeline.template, [("user", "what is it?")]), SHORT)]


def test_zero_vector_left_padding_leaves_each_row_unchanged(folders, images) -> None:
    """Rows of a batch are padded on the left with zero vectors (MiniGPTBase.generate); with the mask, each
    row's next-token logits are its own single-row logits."""
    pipeline = load_pipeline(str(folders["vicuna0"]))
    prompts = [conversation_prompt(pipeline.template, [("user", text)])
               for text in ("what is it?", "describe the shapes on the left of the picture please")]
    tokens = pipeline.encode_images(images[:2])
    rows = [pipeline._embeddings(prompt, tokens[index]) for index, prompt in enumerate(prompts)]
    embeds, mask = left_padded(rows)
    assert mask[0].tolist().count(0) == rows[1].shape[0] - rows[0].shape[0] and not embeds[0, 0].any()
    llm = pipeline.model.language_model
    with torch.no_grad():
        batched = llm(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
        single = torch.cat([llm(inputs_embeds=row[None]).logits[:, -1] for row in rows])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_chat_rejects_bad_turns(folders, images) -> None:
    pipeline = load_pipeline(str(folders["vicuna0"]))
    with pytest.raises(ValueError, match="must end with a user message"):
        pipeline.chat(images[0], [ChatTurn("user", "hi"), ChatTurn("assistant", "hello")])


def test_predict_caption_and_vqa_commands(folders, images, capsys) -> None:
    folder = str(folders["minigptv2"])
    assert main(["predict", "caption", "--model", folder, "--image", str(images[0]), "--max-new-tokens", "6",
                 "--json"]) == 0
    captions = json.loads(capsys.readouterr().out)
    pipeline = load_pipeline(folder, task="caption")
    settings = pipeline.settings.caption.with_overrides(max_new_tokens=6)
    assert captions == [{"image": str(images[0]), "caption": pipeline.caption([images[0]], settings=settings)[0]}]
    assert pipeline.settings.prompt == "[caption] please describe this image?"
    assert main(["predict", "vqa", "--model", folder, "--image", str(images[1]), "--question", "what colour?",
                 "--max-new-tokens", "4", "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert answers[0]["question"] == "what colour?" and isinstance(answers[0]["answer"], str)


def test_predict_chat_and_interactive_chat_commands(folders, images, capsys, monkeypatch) -> None:
    import io

    folder = str(folders["vicuna0"])
    assert main(["predict", "chat", "--model", folder, "--image", str(images[0]), str(images[1]), "--prompt",
                 "what is it?", "--max-new-tokens", "5", "--repetition-penalty", "1.05", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    pipeline = load_pipeline(folder)
    settings = pipeline.chat_settings.with_overrides(max_new_tokens=5)
    assert rows == [{"image": str(path), "prompt": "what is it?",
                     "response": pipeline.respond([path], ["what is it?"], settings)[0]} for path in images[:2]]
    monkeypatch.setattr("sys.stdin", io.StringIO("where is it?\n/quit\n"))
    assert main(["chat", "--model", folder, "--image", str(images[0]), "--prompt", "what is it?",
                 "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    first = pipeline.chat(images[0], [ChatTurn("user", "what is it?")], settings)
    second = pipeline.chat(images[0], [ChatTurn("user", "what is it?"), ChatTurn("assistant", first),
                                       ChatTurn("user", "where is it?")], settings)
    assert [line.strip() for line in out] == [first, second]
