"""MiniGPT-4 / MiniGPT-v2: the prompts the official code builds (strings and tokens), box text, conversion from
files in the official layout, and the debug-flavour checks.

Expected strings are written from Vision-CAIR/MiniGPT-4 d94738a `minigpt4/conversation/conversation.py`
(`CONV_VISION_Vicuna0`, `CONV_VISION_LLama2`, `CONV_VISION_minigptv2`, `Conversation.get_prompt`,
`Chat.upload_img` / `Chat.ask`) and `minigpt4/common/eval_utils.py::prepare_texts`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from mixkit.models.blip2.convert_lavis import ConversionError
from mixkit.models.minigpt4.boxes import box_iou, format_box, parse_boxes, parse_refer_answer
from mixkit.models.minigpt4.convert import convert_official
from mixkit.models.minigpt4.modeling import MiniGPT4Model
from mixkit.models.minigpt4.templates import TEMPLATES, chat_response, conversation_prompt, generate_response
from mixkit.models.minigpt4.tiny import tiny_llama_config
from mixkit.pipelines.minigpt4 import StopOnSequences, TextPieces, stop_sequences
from mixkit.testing import build_tiny_minigpt4, build_tiny_predictor, randomize_

SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it "
          "to you. Please answer my questions.")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict:
    return {variant: build_tiny_minigpt4(tmp_path_factory.mktemp(variant), variant)
            for variant in ("vicuna0", "llama2", "minigptv2")}


# ---------------------------------------------------------------- prompts


def test_prompt_strings_as_the_official_templates() -> None:
    turns = [("user", "What is it?"), ("assistant", "A red circle."), ("user", "Where?")]
    assert conversation_prompt(TEMPLATES["vicuna0"], turns) == (
        SYSTEM + "###Human: <Img><ImageHere></Img> What is it?###Assistant: A red circle."
        "###Human: Where?###Assistant: ")
    assert conversation_prompt(TEMPLATES["llama2"], turns) == (
        SYSTEM + "<s>[INST] <Img><ImageHere></Img> What is it? [/INST] A red circle."
        "<s>[INST] Where? [/INST] ")
    # eval_vqa.py / eval_ref.py: prepare_texts with CONV_VISION_minigptv2 (system "")
    assert conversation_prompt(TEMPLATES["minigptv2"], [("user", "[refer] give me the location of the cat")]) == (
        "<s>[INST] <Img><ImageHere></Img> [refer] give me the location of the cat [/INST]")


@pytest.mark.parametrize("variant", ["vicuna0", "llama2", "minigptv2"])
def test_prompt_tokens_segment_wise_with_bos_on_the_first_only(pipelines, variant: str) -> None:
    pipeline = pipelines[variant]
    tokenizer = pipeline.tokenizer
    prompt = conversation_prompt(pipeline.template, [("user", "a red circle?")])
    before, after = prompt.split("<ImageHere>")
    ids, slots = pipeline.prompt_ids(prompt)
    first = tokenizer(before)["input_ids"]
    second = tokenizer(after, add_special_tokens=False)["input_ids"]
    assert ids == first + [0] * pipeline.num_image_tokens + second
    assert slots == [False] * len(first) + [True] * pipeline.num_image_tokens + [False] * len(second)
    assert first[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in second
    pieces = tokenizer.convert_ids_to_tokens(second)
    assert pieces[0].startswith("\u2581"), "legacy sentencepiece: every separately tokenized segment starts with '▁'"
    if variant != "vicuna0":  # the Llama-2 templates hold a literal "<s>": two BOS, then "▁[" (legacy)
        assert first.count(tokenizer.bos_token_id) == 2
        literal = first.index(tokenizer.bos_token_id, 1)
        assert tokenizer.convert_ids_to_tokens(first[literal + 1]).startswith("\u2581")
        if variant == "minigptv2":
            assert first[:2] == [tokenizer.bos_token_id] * 2


def test_stop_words_and_response_cleaning(pipelines) -> None:
    tokenizer = pipelines["vicuna0"].tokenizer
    sequences = stop_sequences(tokenizer, ["###"])
    assert len(sequences) == 2
    # word-initial and after a letter (LLaMA's vocabulary: [835] "▁###" and [2277, 29937] "##" "#")
    assert tokenizer.convert_ids_to_tokens(sequences[0]) == ["\u2581###"]
    assert [tokenizer.decode(ids) for ids in sequences] == ["###", "###"]
    stop = StopOnSequences(sequences)
    rows = torch.tensor([[5] * (3 - len(sequences[1])) + sequences[1], [5, 6, 7]])
    assert stop(rows, None).tolist() == [True, False]
    assert chat_response(" It is red.###Human: more") == "It is red."
    assert chat_response("Assistant: blue###") == "blue"
    assert generate_response("[/INST] {<1><2><3><4>}</s>junk") == "{<1><2><3><4>}"


def test_streamed_pieces_hold_back_stop_word_prefixes(pipelines) -> None:
    tokenizer = pipelines["vicuna0"].tokenizer
    pieces: list[str] = []
    streamer = TextPieces(tokenizer, ["###"], pieces.append)
    streamer.put(torch.zeros(1, 0, dtype=torch.long))  # the prompt (embeddings: no ids)
    for token in tokenizer("a red circle##", add_special_tokens=False)["input_ids"]:
        streamer.put(torch.tensor([token]))
    assert "".join(pieces) == "a red circle"  # "##" may still become "###"
    streamer.put(torch.tensor(tokenizer("#", add_special_tokens=False)["input_ids"][-1:]))
    streamer.end()
    assert "".join(pieces) == "a red circle"


# ---------------------------------------------------------------- box text


def test_box_text_both_ways() -> None:
    # ReferCOCODataset: (x, y, x + w, y + h) / size * 100, cut to ints
    assert format_box((64.0, 48.0, 320.0, 240.0), 640, 480) == "{<10><10><50><50>}"
    assert parse_refer_answer(" {<10><10><50><50>}", 640, 480) == (64.0, 48.0, 320.0, 240.0)
    assert parse_refer_answer("the cat {<10><10><50><50>}", 640, 480) is None  # re.match: the box comes first
    found = parse_boxes("<p>a cat</p> {<0><0><50><50>}<delim>{<50><50><100><100>} and {<1><2><3><4>}", 100, 200)
    assert found == [("a cat", (0.0, 0.0, 50.0, 100.0)), ("a cat", (50.0, 100.0, 100.0, 200.0)),
                     (None, (1.0, 4.0, 3.0, 8.0))]
    assert box_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert box_iou((0, 0, 9, 9), (0, 0, 4, 9)) == 0.5  # computeIoU counts 10 x 10 pixels vs 5 x 10


# ---------------------------------------------------------------- conversion from the official layout


def llama_folder(directory: Path, tokenizer, seed: int = 3) -> LlamaForCausalLM:
    model = randomize_(LlamaForCausalLM(tiny_llama_config(len(tokenizer))), seed, 0.1)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def official_pth(path: Path, projection: torch.nn.Linear, lora: dict[str, torch.Tensor] | None = None) -> Path:
    """As runner_base.py saves: {"model": trainable tensors, "optimizer", "config", "scaler", "epoch"}."""
    model = {"llama_proj.weight": projection.weight.detach().clone(), "llama_proj.bias": projection.bias.detach()}
    model.update(lora or {})
    torch.save({"model": model, "optimizer": {"state": {}, "param_groups": []}, "config": {"model": {"arch": "x"}},
                "scaler": None, "epoch": 3}, path)
    return path


@pytest.mark.parametrize("adapter_suffix", ["", ".default"])
def test_minigptv2_conversion_from_official_files(pipelines, tmp_path: Path, adapter_suffix: str) -> None:
    blip2 = build_tiny_predictor(tmp_path / "blip2").model
    llama = llama_folder(tmp_path / "llama", pipelines["minigptv2"].tokenizer)
    projection = torch.nn.Linear(32 * 4, 32)
    lora = {f"llama_model.base_model.model.model.layers.{i}.self_attn.{m}.lora_{ab}{adapter_suffix}.weight":
            torch.randn((4, 32) if ab == "A" else (32, 4)) for i in range(2) for m in ("q_proj", "v_proj")
            for ab in "AB"}
    path = official_pth(tmp_path / "minigptv2_checkpoint.pth", projection, lora)
    out = convert_official("minigptv2", path, tmp_path / "blip2", tmp_path / "llama", tmp_path / "out")
    model = MiniGPT4Model.from_pretrained(out)
    assert (model.config.lora.r, model.config.lora.alpha) == (4, 16)  # rank from the file, alpha minigpt_v2.yaml
    state = model.state_dict()
    torch.testing.assert_close(state["llama_proj.weight"], projection.weight)
    torch.testing.assert_close(state["language_model.model.layers.1.self_attn.v_proj.lora_B.default.weight"],
                               lora[f"llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B"
                                    f"{adapter_suffix}.weight"])
    torch.testing.assert_close(state["language_model.model.layers.0.self_attn.q_proj.base_layer.weight"],
                               llama.model.layers[0].self_attn.q_proj.weight)
    torch.testing.assert_close(state["vision_model.encoder.layers.0.mlp.fc1.weight"],
                               blip2.vision_model.encoder.layers[0].mlp.fc1.weight)
    assert torch.equal(state["vision_model.post_layernorm.weight"], torch.ones(32))  # a fresh ln_vision
    assert json.loads((out / "preprocessor_config.json").read_text())["size"]["height"] == 448


def test_minigpt4_vicuna_conversion_takes_blip2s_qformer(pipelines, tmp_path: Path) -> None:
    blip2 = build_tiny_predictor(tmp_path / "blip2").model
    llama_folder(tmp_path / "llama", pipelines["vicuna0"].tokenizer)
    projection = torch.nn.Linear(32, 32)
    path = official_pth(tmp_path / "pretrained_minigpt4.pth", projection)
    model = MiniGPT4Model.from_pretrained(convert_official("vicuna0", path, tmp_path / "blip2", tmp_path / "llama",
                                                           tmp_path / "out"))
    torch.testing.assert_close(model.query_tokens, blip2.query_tokens)
    torch.testing.assert_close(model.vision_model.post_layernorm.weight, blip2.vision_model.post_layernorm.weight)
    theirs = blip2.qformer.state_dict()
    for name, value in model.qformer.state_dict().items():
        torch.testing.assert_close(value, theirs[name])
    torch.testing.assert_close(model.llama_proj.bias, projection.bias)
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"llama_proj.weight": projection.weight, "llama_proj.bias": projection.bias,
                          "Qformer.bert.x": torch.zeros(1)}}, bad)
    with pytest.raises(ConversionError, match="Qformer.bert.x"):
        convert_official("vicuna0", bad, tmp_path / "blip2", tmp_path / "llama", tmp_path / "out2")


class NotWeights:
    pass


def test_pickled_objects_are_refused(tmp_path: Path, pipelines) -> None:
    build_tiny_predictor(tmp_path / "blip2")
    llama_folder(tmp_path / "llama", pipelines["vicuna0"].tokenizer)
    torch.save({"model": {"llama_proj.weight": torch.zeros(1)}, "x": NotWeights()}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="weights_only"):
        convert_official("vicuna0", tmp_path / "evil.pth", tmp_path / "blip2", tmp_path / "llama", tmp_path / "o")


# ---------------------------------------------------------------- debug flavour


def grouped_patch_reference(model: MiniGPT4Model, pixels: torch.Tensor) -> torch.Tensor:
    """encode_img of minigpt_v2.py written out: drop CLS, view(bs, pn / 4, hs * 4), llama_proj."""
    features = model.vision_model(pixels)[:, 1:, :]
    bs, pn, hs = features.shape
    return model.llama_proj(features.view(bs, pn // 4, hs * 4))


@pytest.mark.parametrize("variant", ["vicuna0", "llama2", "minigptv2"])
def test_debug_flavour_checks(pipelines, variant: str, tmp_path: Path) -> None:
    model = pipelines[variant].model
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    if variant != "vicuna0":
        torch.testing.assert_close(model.image_tokens(model.encode_image(pixels)),
                                   grouped_patch_reference(model, pixels))
    ids = torch.randint(3, 100, (2, 10))
    image_mask = torch.zeros(2, 10, dtype=torch.bool)
    image_mask[:, 1:5] = True
    mask = torch.ones(2, 10, dtype=torch.long)
    model.lock_frozen_parts()
    model.train()
    logits = model(pixels, ids, mask, image_mask)
    assert torch.isfinite(logits).all()
    logits.float().logsumexp(-1).mean().backward()
    for name, parameter in model.named_parameters():
        trainable = name.startswith("llama_proj.") or ".lora_" in name
        assert parameter.requires_grad == trainable, name
        assert (parameter.grad is not None) == trainable, name
        if trainable:
            assert parameter.grad.abs().sum() > 0, name
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        before = model(pixels, ids, mask, image_mask)
        model.save_pretrained(tmp_path / "copy")
        again = MiniGPT4Model.from_pretrained(tmp_path / "copy")(pixels, ids, mask, image_mask)
    torch.testing.assert_close(again, before, rtol=0, atol=0)


def test_image_slots_must_match_the_images(pipelines) -> None:
    model = pipelines["llama2"].model
    ids = torch.zeros(1, 6, dtype=torch.long)
    mask = torch.zeros(1, 6, dtype=torch.bool)
    mask[0, :3] = True
    with pytest.raises(ValueError, match="3 image slots"):
        model.input_embeddings(ids, mask, torch.zeros(1, 4, 32))


def test_conversion_command_reports_bad_input(tmp_path: Path, capsys) -> None:
    from mixkit.cli import main

    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    code = main(["convert", "minigpt4", "--variant", "llama2", "--checkpoint", str(tmp_path / "missing.pth"),
                 "--blip2", str(tmp_path), "--llama", str(tmp_path), "--output", str(tmp_path / "o")])
    assert code == 2 and "mixkit convert minigpt4: error" in capsys.readouterr().err
