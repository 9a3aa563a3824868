"""`mixkit train clip`: the run lowers the loss and writes a CLIP folder `ClipPipeline` loads; open_clip's no-decay
split and logit-scale clamp in the shared Trainer; locked image tower; bad options; the shipped recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.testing import build_tiny_clip
from mixkit.train.arguments import Blip2TrainingArguments, DataArguments, ModelArguments
from mixkit.train.clip_stage import build_clip_stage
from mixkit.train.trainer import Blip2Trainer

RECIPE = Path(__file__).parents[2] / "configs" / "clip_vit_b32_coco.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """8 shapes images (5 captions each) at 32 px, and a tiny random CLIP whose tokenizer knows their words."""
    shapes, model = tmp_path_factory.mktemp("shapes"), tmp_path_factory.mktemp("tiny-clip")
    write_shapes_dataset(shapes, ShapesConfig(num_train=8, num_val=0, num_test=0, image_size=32))
    records = json.loads((shapes / "annotations/caption_train.json").read_text())
    build_tiny_clip(model, [record["caption"] for record in records])
    return model, shapes


def data_arguments(shapes: Path) -> DataArguments:
    return DataArguments(dataset_name="custom_caption", data_files=[str(shapes / "annotations/caption_train.json")],
                         image_root=str(shapes), image_size=32, max_text_length=24)


def cli_args(model: Path, shapes: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "clip", "--model_name_or_path", str(model), "--freeze_vit", "false", "--dataset_name",
            "custom_caption", "--data_files", str(shapes / "annotations/caption_train.json"), "--image_root",
            str(shapes), "--image_size", "32", "--max_text_length", "24", "--output_dir", str(output),
            "--per_device_train_batch_size", "8", "--max_steps", "15", "--warmup_steps", "2", "--logging_steps", "1",
            "--learning_rate", "2e-3", "--eta_min", "0", "--weight_decay", "0.2", "--save_strategy", "steps",
            "--save_steps", "15", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0", "--use_cpu", "true",
            *extra]


def trainer_for(model: Path, shapes: Path, output: Path, **arguments) -> Blip2Trainer:
    parts = build_clip_stage(ModelArguments(model_name_or_path=str(model), freeze_vit=False), data_arguments(shapes))
    args = Blip2TrainingArguments(output_dir=str(output), per_device_train_batch_size=8, report_to="none",
                                  use_cpu=True, save_strategy="no", disable_tqdm=True, **arguments)
    return Blip2Trainer(model=parts.model, args=args, train_dataset=parts.dataset, data_collator=parts.collator,
                        task=parts.task, batch_type=parts.batch_type)


def test_train_clip_lowers_the_loss_and_writes_a_folder_classify_loads(setup, tmp_path: Path) -> None:
    from mixkit.pipelines.clip import ClipPipeline

    model, shapes = setup
    assert main(cli_args(model, shapes, tmp_path / "out")) == 0
    state = json.loads((tmp_path / "out/checkpoint-15/trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 15 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], losses  # 40 pairs, seen ~3 times: it learns them
    scales = [entry["logit_scale"] for entry in state["log_history"] if "loss" in entry]  # logged beside the loss
    assert scales[0] == pytest.approx(1 / 0.07, rel=1e-2) and all(0 < scale <= 100 for scale in scales)
    pipeline = ClipPipeline.from_pretrained(tmp_path / "out", device="cpu")
    assert 0 < pipeline.logit_scale <= 100
    images = [shapes / "images/train/shapes_train_000000.jpg", shapes / "images/train/shapes_train_000001.jpg"]
    probabilities = pipeline.classify(images, ["red circle", "blue square"])
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))


def test_no_weight_decay_for_gains_biases_logit_scale_and_position_embeddings(setup, tmp_path: Path) -> None:
    trainer = trainer_for(*setup, tmp_path, weight_decay=0.2)
    optimizer = trainer.create_optimizer()
    names = {id(parameter): name for name, parameter in trainer.model.named_parameters()}
    decay = {group["weight_decay"]: {names[id(p)].removeprefix("model.") for p in group["params"]}
             for group in optimizer.param_groups}
    assert set(decay) == {0.2, 0.0}
    expected_no_decay = {name for name, parameter in trainer.model.model.named_parameters()
                         if parameter.ndim <= 1 or name.endswith("embeddings.position_embedding.weight")}
    assert decay[0.0] == expected_no_decay
    for name in ("logit_scale", "vision_model.embeddings.class_embedding", "text_model.final_layer_norm.weight",
                 "text_model.embeddings.position_embedding.weight", "vision_model.embeddings.position_embedding.weight",
                 "vision_model.encoder.layers.0.self_attn.q_proj.bias"):
        assert name in decay[0.0], name
    for name in ("text_model.embeddings.token_embedding.weight", "vision_model.embeddings.patch_embedding.weight",
                 "visual_projection.weight", "text_projection.weight", "text_model.encoder.layers.0.mlp.fc1.weight"):
        assert name in decay[0.2], name


@pytest.mark.parametrize(("start", "clamped"), [(10.0, math.log(100)), (-3.0, 0.0)])
def test_logit_scale_is_clamped_after_every_update(setup, tmp_path: Path, start: float, clamped: float) -> None:
    """A learning rate of 1e-9 moves nothing: only the clamp after the update can bring 10 (or -3) into range."""
    trainer = trainer_for(*setup, tmp_path, learning_rate=1e-9, max_steps=1, warmup_steps=0)
    clip = trainer.model.model
    with torch.no_grad():
        clip.logit_scale.fill_(start)
    trainer.train()
    assert clip.logit_scale.item() == pytest.approx(clamped, abs=1e-6)


def test_freeze_vit_locks_the_image_tower(setup) -> None:
    from mixkit.train.memory import BatchShape, towers

    model, shapes = setup
    parts = build_clip_stage(ModelArguments(model_name_or_path=str(model), freeze_vit=True), data_arguments(shapes))
    trainable = {name for name, parameter in parts.model.named_parameters() if parameter.requires_grad}
    assert trainable and not any(name.startswith(("vision_model.", "visual_projection.")) for name in trainable)
    assert "logit_scale" in trainable and "text_projection.weight" in trainable
    # The memory planner counts only the stacks backward passes through: the text tower.
    stacks = towers(parts.model, BatchShape(batch=8, image_size=32, text_length=24, value_bytes=4))
    assert [(tower.layers, tower.sequence) for tower in stacks] == [(2, 24)]


def test_wrong_image_size_is_a_usage_error(setup, tmp_path: Path, capsys) -> None:
    model, shapes = setup
    args = cli_args(model, shapes, tmp_path / "out")
    args[args.index("--image_size") + 1] = "64"
    assert main(args) == 2
    assert "--image_size 64" in capsys.readouterr().err


def test_clip_recipe_carries_open_clip_settings(tmp_path: Path) -> None:
    from mixkit.train.train_cli import parse, recipe_stage

    assert recipe_stage(RECIPE) == "clip"
    model, data, train = parse("clip", str(RECIPE), ["--output_dir", str(tmp_path)])
    assert (model.model_name_or_path, model.freeze_vit, data.image_size, data.max_text_length) == (
        "clip-vit-b-32", False, 224, 77)
    assert (train.per_device_train_batch_size, train.learning_rate, train.warmup_steps, train.weight_decay,
            train.num_train_epochs, train.eta_min) == (128, 1e-5, 1000, 0.1, 1, 0.0)
    assert (train.adam_beta1, train.adam_beta2, train.adam_epsilon) == (0.9, 0.98, 1e-6)
