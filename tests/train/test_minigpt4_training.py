"""MiniGPT-4 stage 1 / stage 2 and MiniGPT-v2 LoRA training on the shapes data: the sequences as the official
`MiniGPTBase.forward` builds them, the loss falls and ends below the starting checkpoint's (the baseline) on
the same batch, and only llama_proj (and LoRA) change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.data.shapes.grounding import write_refcoco_file
from mixkit.models.minigpt4.modeling import MiniGPT4Model
from mixkit.models.minigpt4.templates import TEMPLATES
from mixkit.pipelines.auto import load_pipeline
from mixkit.testing import build_tiny_minigpt4, teach_language
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.minigpt4_stage import MiniGPT4Batch, MiniGPT4Collator, MiniGPT4Task
from mixkit.train.stages import build_stage
from mixkit.train.stage2_task import IGNORE_INDEX
from mixkit.train.trainer import last_complete_checkpoint

SHAPES = ShapesConfig(num_train=12, num_val=2, num_test=2, image_size=32, captions_per_image=1)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, SHAPES)
    write_refcoco_file(root, SHAPES, "train")
    return root


def captions(root: Path) -> list[str]:
    return [record["caption"] for record in json.loads((root / "annotations/caption_train.json").read_text())]


def train_args(model: Path, shapes: Path, output: Path, data: list[str]) -> list[str]:
    return ["--model_name_or_path", str(model), *data, "--image_root", str(shapes), "--image_size", "32",
            "--output_dir", str(output), "--per_device_train_batch_size", "6", "--num_train_epochs", "8",
            "--warmup_steps", "1", "--logging_steps", "2", "--learning_rate", "8e-2", "--report_to", "none",
            "--disable_tqdm", "true", "--seed", "0", "--max_text_length", "24"]


def caption_data(shapes: Path) -> list[str]:
    return ["--dataset_name", "custom_caption", "--data_files", str(shapes / "annotations/caption_train.json")]


def batch_loss(model_dir: Path, stage: str, args: list[str]) -> float:
    """The task's loss of `model_dir` on the first training batch (fixed order, eval mode)."""
    parts = build_stage(stage, ModelArguments(model_name_or_path=str(model_dir)), data_arguments(args))
    samples = [parts.dataset[index] for index in range(6)]
    collated = parts.collator(samples)
    batch = MiniGPT4Batch(**{key: collated[key] for key in MiniGPT4Batch.__dataclass_fields__})
    with torch.no_grad():
        return MiniGPT4Task().compute(parts.model.eval(), batch).loss.item()


def data_arguments(args: list[str]) -> DataArguments:
    values = dict(zip(args[::2], args[1::2]))
    return DataArguments(dataset_name=values.get("--dataset_name", "custom_caption"),
                         data_files=[values["--data_files"]], image_root=values["--image_root"], image_size=32,
                         max_text_length=24)


def pretrain_language_model(folder: Path, texts: list[str], end: str, steps: int = 60) -> None:
    """MiniGPT-4 freezes a pretrained LLM: teach the tiny random Llama the captions' language (text only) first,
    so that training llama_proj measures what the image adds."""
    pipeline = load_pipeline(str(folder), task="chat")
    teach_language(pipeline.model.language_model, pipeline.tokenizer, [text + end for text in texts], steps,
                   trains=lambda name: ".lora_" not in name)
    pipeline.save_pretrained(folder)


def losses(output: Path) -> list[float]:
    state = json.loads((last_complete_checkpoint(output) / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_collator_builds_the_official_sequence(tmp_path: Path) -> None:
    pipeline = build_tiny_minigpt4(tmp_path, "vicuna0")
    tokenizer = pipeline.tokenizer
    collator = MiniGPT4Collator(tokenizer, num_image_tokens=4, end_symbol="###")
    instruction = TEMPLATES["vicuna0"].training_template.format("<Img><ImageHere></Img> Describe this image.")
    ids, slots, labels = collator.sample_ids(instruction, "a red circle")
    before, after = instruction.split("<ImageHere>")
    prompt = ([tokenizer.bos_token_id] + tokenizer(before, add_special_tokens=False)["input_ids"] + [0] * 4
              + tokenizer(after, add_special_tokens=False)["input_ids"])
    answer = tokenizer("a red circle###", add_special_tokens=False)["input_ids"]
    assert ids == prompt + answer and sum(slots) == 4
    assert labels == [IGNORE_INDEX] * len(prompt) + answer
    stage1_ids, stage1_slots, _ = collator.sample_ids(None, "a red circle")  # stage 1: BOS, image, caption
    assert stage1_ids[0] == tokenizer.bos_token_id and stage1_slots[1:5] == [True] * 4 and not any(stage1_slots[5:])
    padded = collator([{"image": torch.zeros(3, 32, 32), "instruction": None, "answer": "a"},
                       {"image": torch.zeros(3, 32, 32), "instruction": instruction, "answer": "a red circle"}])
    assert padded["attention_mask"][0].sum() < padded["attention_mask"][1].sum()  # right-padded
    assert (padded["labels"][0][padded["attention_mask"][0] == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("stage, variant", [("minigpt4-stage1", "vicuna0"), ("minigpt4-stage2", "llama2")])
def test_minigpt4_stages_learn_on_shapes(shapes: Path, tmp_path: Path, stage: str, variant: str) -> None:
    build_tiny_minigpt4(tmp_path / "start", variant, captions(shapes), weight_std=0.05)
    pretrain_language_model(tmp_path / "start", captions(shapes), "\n" if stage.endswith("1") else "")
    data = caption_data(shapes)
    baseline = batch_loss(tmp_path / "start", stage, [*data, "--image_root", str(shapes)])
    assert main(["train", stage, *train_args(tmp_path / "start", shapes, tmp_path / "out", data)]) == 0
    logged = losses(tmp_path / "out")
    assert logged[-1] < logged[0]
    trained = batch_loss(tmp_path / "out", stage, [*data, "--image_root", str(shapes)])
    assert trained < 0.9 * baseline, (trained, baseline)
    before, after = MiniGPT4Model.from_pretrained(tmp_path / "start"), MiniGPT4Model.from_pretrained(tmp_path / "out")
    for name, value in before.state_dict().items():
        assert torch.equal(value, after.state_dict()[name]) != name.startswith("llama_proj."), name


def test_minigptv2_lora_learns_refer_boxes(shapes: Path, tmp_path: Path) -> None:
    records = json.loads((shapes / "annotations/refcoco_train.json").read_text())
    build_tiny_minigpt4(tmp_path / "start", "minigptv2", [r["sents"] for r in records], weight_std=0.05)
    pretrain_language_model(tmp_path / "start", [r["sents"] for r in records], "")
    data = ["--data_files", str(shapes / "annotations/refcoco_train.json")]
    baseline = batch_loss(tmp_path / "start", "minigptv2", [*data, "--image_root", str(shapes)])
    assert main(["train", "minigptv2", *train_args(tmp_path / "start", shapes, tmp_path / "out", data)]) == 0
    trained = batch_loss(tmp_path / "out", "minigptv2", [*data, "--image_root", str(shapes)])
    assert trained < 0.9 * baseline, (trained, baseline)
    before, after = MiniGPT4Model.from_pretrained(tmp_path / "start"), MiniGPT4Model.from_pretrained(tmp_path / "out")
    changed = {name for name, value in before.state_dict().items() if not torch.equal(value, after.state_dict()[name])}
    assert changed and all(name.startswith("llama_proj.") or ".lora_" in name for name in changed)
    assert any(".lora_B." in name for name in changed)


def test_stage_and_checkpoint_must_match(shapes: Path, tmp_path: Path, capsys) -> None:
    build_tiny_minigpt4(tmp_path / "start", "vicuna0")
    data = ["--data_files", str(shapes / "annotations/refcoco_train.json")]
    assert main(["train", "minigptv2", *train_args(tmp_path / "start", shapes, tmp_path / "out", data)]) == 2
    assert "cannot train" in capsys.readouterr().err
