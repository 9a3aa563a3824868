"""Every shipped recipe loads, names its stage, and carries the LAVIS settings it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixkit.train.train_options import STAGES
from mixkit.train.train_cli import TrainConfigError, parse, recipe_arguments, recipe_stage

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))

# (batch per device, peak lr, eta_min, warm-up, epochs, image size, ViT frozen): LAVIS's project yamls
EXPECTED = {
    "blip2-stage1": (100, 1e-4, 1e-5, 5000, 10, 224, True),
    "blip2-stage2": (64, 1e-4, 1e-5, 2000, 10, 224, True),
    "blip2-caption": (16, 1e-5, 0.0, 1000, 5, 364, False),
    # InstructBLIP paper (arXiv 2305.06500) section 3.5; LAVIS released no InstructBLIP training config
    "instructblip": (8, 1e-5, 0.0, 1000, 1, 224, True),
    # LAVIS 506965b lavis/projects/albef/train/ret_coco_ft.yaml and pretrain.yaml (+ configs/models/albef_*.yaml)
    "albef-retrieval": (32, 1e-5, 1e-6, 0, 5, 384, False),
    "albef-pretrain": (64, 3e-4, 1e-6, 3000, 20, 256, False),
    # Vision-CAIR/MiniGPT-4 d94738a train_configs/*.yaml (epochs of fixed iterations: max_steps in the recipes)
    "minigpt4-stage1": (64, 1e-4, 8e-5, 5000, 4, 224, True),
    "minigpt4-stage2": (12, 3e-5, 1e-5, 200, 5, 224, True),
    "minigptv2": (2, 1e-5, 1e-6, 1000, 50, 448, True),
    # PaddleMIX 6afaf05 examples/minigpt4/run_train.py (lr 3e-5, 200 epochs); the rest as the official stage 2
    "minigpt4_stage2_paddlemix.yaml": (12, 3e-5, 1e-5, 200, 200, 224, True),
    # LAVIS 506965b lavis/projects/blip/train/{pretrain_14m,caption_coco_ft,vqav2_ft}.yaml (more in test_blip_training.py)
    "blip-pretrain": (75, 3e-4, 1e-6, 3000, 20, 224, False),
    "blip-caption": (32, 1e-5, 0.0, 0, 5, 384, False),
    "blip-vqa": (16, 2e-5, 0.0, 0, 10, 480, False),
}


def test_recipes_exist_for_every_stage() -> None:
    assert {recipe_stage(path) for path in CONFIGS} == set(STAGES)


# Recipes whose reference settings are not LAVIS's are checked beside their stage's tests.
CHECKED_ELSEWHERE = {"clip": "tests/train/test_clip_training.py"}
LAVIS_CONFIGS = [path for path in CONFIGS if recipe_stage(path) not in CHECKED_ELSEWHERE]


@pytest.mark.parametrize("path", LAVIS_CONFIGS, ids=lambda p: p.name)
def test_recipe_loads_with_reference_settings(path: Path, tmp_path: Path) -> None:
    stage = recipe_stage(path)
    model, data, train = parse(stage, str(path), ["--output_dir", str(tmp_path)])
    batch, lr, eta_min, warmup, epochs, size, frozen = EXPECTED.get(path.name) or EXPECTED[stage]
    assert (train.per_device_train_batch_size, train.learning_rate, train.eta_min, train.warmup_steps,
            train.num_train_epochs, data.image_size, model.freeze_vit) == (batch, lr, eta_min, warmup, epochs, size,
                                                                          frozen)
    assert train.weight_decay == 0.05 and train.seed == 42
    assert str(train.output_dir) == str(tmp_path), "the command line overrides the recipe"
    if stage == "blip2-caption":
        assert data.prompt == "a photo of " and train.gradient_checkpointing
    if stage.startswith("blip2-") and stage != "blip2-stage1":  # how the frozen LLM trains (LAVIS: dropout on)
        assert "language_model_dropout: true" in path.read_text() and model.language_model_dropout


def test_bad_recipe_is_rejected_before_training(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: [1, 2\n")
    with pytest.raises(TrainConfigError, match="broken.yaml"):
        recipe_arguments(broken)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model_name_or_path: x\nlearning_rat: 0.1\n")
    with pytest.raises(TrainConfigError, match="bad options"):
        parse("blip2-stage2", str(unknown), [])
