"""InstructBLIP through the pipeline layer and the chat commands: a folder written by `transformers` answers
exactly as `transformers` does, settings come from the checkpoint, history and streaming work, and caption / VQA
use the reference instructions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mixkit.apps.chat import chat_loop
from mixkit.cli import main
from mixkit.models.catalogue import get_checkpoint
from mixkit.models.settings import GenerationSettings
from mixkit.pipelines.auto import load_pipeline
from mixkit.pipelines.chat import ChatTurn
from mixkit.pipelines.instructblip import InstructBlipPipeline, conversation_prompt
from mixkit.testing import save_transformers_instructblip

PROMPT = "describe the small red circle"
GREEDY = GenerationSettings(num_beams=1, max_new_tokens=6, min_new_tokens=6, length_penalty=1.0)


@pytest.fixture(scope="module", params=["opt", "t5"])
def hf_folder(request, tmp_path_factory) -> tuple[Path, object, object]:
    """(folder, reference model, processor) of a tiny InstructBLIP saved by `transformers`."""
    folder = tmp_path_factory.mktemp(f"instructblip-{request.param}")
    # T5's random-weight outputs ignore the image at std 0.15; 0.3 makes them differ per image.
    model, processor = save_transformers_instructblip(folder, request.param,
                                                      weight_std=0.3 if request.param == "t5" else 0.15)
    return folder, model.eval(), processor


@pytest.fixture(scope="module")
def pipeline(hf_folder) -> InstructBlipPipeline:
    return load_pipeline(str(hf_folder[0]), task="chat")


def transformers_greedy(model, processor, image: Path, prompt: str, new_tokens: int) -> str:
    """What `transformers`' own greedy `generate` continues on `processor(images=..., text=prompt)`."""
    inputs = processor(images=Image.open(image).convert("RGB"), text=prompt, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    new = ids[:, 1:] if model.config.text_config.is_encoder_decoder else ids[:, inputs.input_ids.shape[1]:]
    return processor.tokenizer.decode(new[0], skip_special_tokens=True).strip()


def run_json(capsys, *argv: str) -> list[dict]:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_chat_is_transformers_greedy_continuation(hf_folder, images, capsys) -> None:
    """The contract: a transformers-saved folder as --model, greedy, 8 new tokens exactly."""
    folder, model, processor = hf_folder
    paths = [str(path) for path in images]
    records = run_json(capsys, "predict", "chat", "--model", str(folder), "--image", *paths, "--prompt", PROMPT,
                       "--num-beams", "1", "--max-new-tokens", "8", "--min-new-tokens", "8", "--json")
    expected = [transformers_greedy(model, processor, path, PROMPT, 8) for path in images]
    assert records == [{"image": path, "prompt": PROMPT, "response": text} for path, text in zip(paths, expected)]
    assert len(set(expected)) > 1, "images must give different answers for this comparison to mean something"


def test_chat_settings_come_from_the_checkpoint(hf_folder, pipeline, tmp_path) -> None:
    # transformers' defaults where generation_config.json names nothing: greedy, 20 new tokens, no penalties
    assert pipeline.chat_settings == GenerationSettings(1, 20, 0, 1.0, 1.0)
    config = json.loads((hf_folder[0] / "generation_config.json").read_text())
    config.update(num_beams=3, max_new_tokens=12, repetition_penalty=1.3, length_penalty=0.5)
    folder = tmp_path / "tuned"
    folder.mkdir()
    for path in hf_folder[0].iterdir():
        (folder / path.name).symlink_to(path)
    (folder / "generation_config.json").unlink()
    (folder / "generation_config.json").write_text(json.dumps(config))
    assert InstructBlipPipeline.from_pretrained(str(folder)).chat_settings == GenerationSettings(3, 12, 0, 0.5, 1.3)


def test_catalogue_names_carry_lavis_defaults() -> None:
    """LAVIS `generate` defaults (blip2_vicuna_instruct.py / blip2_t5_instruct.py): 5 beams, repetition 1.5,
    max_length 256 (Vicuna: 255 new after the placeholder; Flan-T5: max_new_tokens=256)."""
    vicuna, t5 = get_checkpoint("instructblip-vicuna-7b"), get_checkpoint("instructblip-flan-t5-xl")
    assert vicuna.settings.chat == GenerationSettings(5, 255, 0, 1.0, 1.5)
    assert t5.settings.chat == GenerationSettings(5, 256, 0, 1.0, 1.5)
    assert vicuna.settings.prompt == "A short image caption." and t5.hf_repo == "Salesforce/instructblip-flan-t5-xl"
    assert vicuna.settings.vqa_prompt == "Question: {} Short Answer:"
    assert {entry.family for entry in map(get_checkpoint, ("instructblip-flan-t5-xxl", "instructblip-vicuna-13b"))} \
        == {"instructblip"}


def test_batched_responses_equal_one_at_a_time(pipeline, images) -> None:
    prompts = ["what is it?", "describe the large blue square on the left", "a"]
    settings = GenerationSettings(num_beams=2, max_new_tokens=5, min_new_tokens=2, length_penalty=1.0,
                                  repetition_penalty=1.5)
    batched = pipeline.respond(images, prompts, settings)
    single = [pipeline.respond([image], [prompt], settings)[0] for image, prompt in zip(images, prompts)]
    assert batched == single


def test_history_prompt_and_streaming(pipeline, images) -> None:
    turns = [ChatTurn("user", "what is it?"), ChatTurn("assistant", "a red circle"),
             ChatTurn("user", " where is it? ")]
    prompt = conversation_prompt(turns)
    assert prompt == "dialog history: q: what is it? a: a red circle\nwhere is it?"
    assert conversation_prompt(turns[:1]) == "what is it?"
    pieces: list[str] = []
    response = pipeline.chat(images[0], turns, GREEDY, on_text=pieces.append)
    assert response == pipeline.respond([images[0]], [prompt], GREEDY)[0]
    assert len(pieces) >= 1 and "".join(pieces).strip() == response
    beams = GenerationSettings(num_beams=3, max_new_tokens=4, min_new_tokens=4, length_penalty=1.0)
    whole: list[str] = []
    assert pipeline.chat(images[0], turns, beams, on_text=whole.append) == whole[0] and len(whole) == 1
    with pytest.raises(ValueError, match="end with a user message"):
        pipeline.chat(images[0], turns[:2], GREEDY)


def test_chat_loop_keeps_and_resets_history(pipeline, images) -> None:
    asked: list[list[ChatTurn]] = []

    class Recorder:  # the real pipeline, recording the conversations it is given
        def chat(self, image, turns, settings, on_text=None):
            asked.append(list(turns))
            return pipeline.chat(image, turns, settings, on_text)

    written: list[str] = []
    turns = chat_loop(Recorder(), images[0], GREEDY, ["what is it?\n", "", "and the color?", "/reset", "hi",
                                                       "/quit", "never read"], written.append, lambda _: None)
    assert [len(conversation) for conversation in asked] == [1, 3, 1]
    assert asked[1][:2] == [ChatTurn("user", "what is it?"), ChatTurn("assistant", asked[1][1].text)]
    assert turns[0] == ChatTurn("user", "hi") and len(turns) == 2
    assert "".join(written).count("\n") == 3


def test_mixkit_chat_command_streams_responses(hf_folder, pipeline, images, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("what is it?\nand the color?\n"))
    assert main(["chat", "--model", str(hf_folder[0]), "--image", str(images[1]), "--num-beams", "1",
                 "--max-new-tokens", "6", "--min-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = pipeline.respond([images[1]], ["what is it?"], GREEDY)[0]
    second_prompt = conversation_prompt([ChatTurn("user", "what is it?"), ChatTurn("assistant", first),
                                         ChatTurn("user", "and the color?")])
    assert [line.strip() for line in lines] == [first, pipeline.respond([images[1]], [second_prompt], GREEDY)[0]]


def test_predict_caption_and_vqa_use_the_reference_instructions(hf_folder, pipeline, images, capsys) -> None:
    folder, path = str(hf_folder[0]), str(images[0])
    options = ["--num-beams", "1", "--max-new-tokens", "6", "--min-new-tokens", "6", "--json"]
    caption = run_json(capsys, "predict", "caption", "--model", folder, "--image", path, *options)
    vqa = run_json(capsys, "predict", "vqa", "--model", folder, "--image", path, "--question", "What color is it?",
                   *options)
    # predict caption/vqa keep the reference's repetition penalties (1.15 captions, 1.5 VQA), as LAVIS runs them
    caption_settings = GenerationSettings(1, 6, 6, 1.0, pipeline.settings.caption.repetition_penalty)
    vqa_settings = GenerationSettings(1, 6, 6, -1.0, pipeline.settings.vqa.repetition_penalty)
    assert caption[0]["caption"] == pipeline.respond([images[0]], ["A short image caption."], caption_settings)[0]
    expected = pipeline.respond([images[0]], ["Question: what color is it? Short Answer:"], vqa_settings)[0]
    assert vqa[0]["answer"] == expected


def test_bad_chat_input_is_a_usage_error(hf_folder, images, capsys, tmp_path) -> None:
    folder = str(hf_folder[0])
    assert main(["predict", "chat", "--model", folder, "--image", str(images[0]), "--prompt", "  "]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert main(["predict", "chat", "--model", folder, "--image", str(tmp_path / "missing.png"), "--prompt", "x"]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert main(["predict", "chat", "--model", folder, "--image", str(images[0]), "--prompt", "x",
                 "--repetition-penalty", "0"]) == 2
    assert "--repetition-penalty" in capsys.readouterr().err


def test_eval_vqa_and_caption_run_with_the_reference_instructions(hf_folder, pipeline, tmp_path) -> None:
    """`mixkit eval vqa|caption` serve InstructBLIP: result files in the official formats, answers and captions
    being what the pipeline gives with the reference instructions."""
    if hf_folder[1].config.text_config.is_encoder_decoder:
        pytest.skip("one LLM is enough for the eval wiring")
    from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset

    shapes = ShapesPaths.under(tmp_path / "shapes")
    write_shapes_dataset(shapes.root, ShapesConfig(num_train=1, num_val=2, num_test=2, image_size=32))
    fast = ["--num-beams", "1", "--max-new-tokens", "3", "--min-new-tokens", "3"]
    assert main(["eval", "vqa", "--model", str(hf_folder[0]), "--questions", str(shapes.vqa_questions["val"]),
                 "--annotations", str(shapes.vqa_annotations["val"]), "--image-root", str(shapes.root),
                 "--image-pattern", "images/val/shapes_val_{image_id:06d}.jpg", "--output-dir",
                 str(tmp_path / "vqa"), *fast]) == 0
    answers = json.loads((tmp_path / "vqa/val_vqa_result.json").read_text())
    question = json.loads(shapes.vqa_questions["val"].read_text())["questions"][0]
    image = shapes.root / f"images/val/shapes_val_{question['image_id']:06d}.jpg"
    settings = GenerationSettings(1, 3, 3, -1.0, pipeline.settings.vqa.repetition_penalty)
    expected = pipeline.respond([image], [pipeline.vqa_prompt(question["question"])], settings)[0]
    assert {"question_id": question["question_id"], "answer": expected} in answers
    assert main(["eval", "caption", "--model", str(hf_folder[0]), "--records", str(shapes.caption_test),
                 "--image-root", str(shapes.root), "--output-dir", str(tmp_path / "caption"), *fast]) == 0
    captions = json.loads((tmp_path / "caption/test_caption_result.json").read_text())
    assert len(captions) == 2 and all(isinstance(c["caption"], str) for c in captions)
