"""The training loop on tiny models and generated data: schedule, losses fall, frozen parts stay put, saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mixkit.testing import build_tiny_predictor, build_tiny_stage1
from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.train.trainer import COMPLETE_MARKER, last_complete_checkpoint, no_decay, warmup_cosine_factor


def test_schedule_hits_warmup_peak_and_floor() -> None:
    floor = 1e-5 / 1e-4
    assert warmup_cosine_factor(0, 10, 110, floor) == 0.0
    assert warmup_cosine_factor(5, 10, 110, floor) == pytest.approx(0.5)
    assert warmup_cosine_factor(10, 10, 110, floor) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, 10, 110, floor) == pytest.approx((1 + floor) / 2)
    assert warmup_cosine_factor(110, 10, 110, floor) == pytest.approx(floor)
    assert warmup_cosine_factor(500, 10, 110, floor) == pytest.approx(floor)  # never below eta_min
    values = [warmup_cosine_factor(step, 10, 110, floor) for step in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_no_weight_decay_on_biases_norms_and_1d() -> None:
    assert no_decay("qformer.encoder.layer.0.attention.output.LayerNorm.weight", torch.nn.Parameter(torch.ones(4, 4)))
    assert no_decay("language_projection.bias", torch.nn.Parameter(torch.ones(4, 4)))
    assert no_decay("temp", torch.nn.Parameter(torch.tensor(0.07)))
    assert not no_decay("query_tokens", torch.nn.Parameter(torch.ones(1, 4, 4)))
    assert not no_decay("language_projection.weight", torch.nn.Parameter(torch.ones(4, 4)))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, ShapesConfig(num_train=16, num_val=2, num_test=2, image_size=32))
    return root


def captions(root: Path) -> list[str]:
    return [record["caption"] for record in json.loads((root / "annotations/caption_train.json").read_text())]


def train_args(model: Path, shapes: Path, output: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset_name", "custom_caption",
            "--data_files", str(shapes / "annotations/caption_train.json"), "--image_root", str(shapes),
            "--image_size", "32", "--output_dir", str(output), "--per_device_train_batch_size", "8",
            "--num_train_epochs", "3", "--warmup_steps", "2", "--logging_steps", "5", "--learning_rate", "1e-3",
            "--report_to", "none", "--disable_tqdm", "true", "--seed", "0", *extra]


def logged_losses(output: Path) -> list[float]:
    state = json.loads((last_complete_checkpoint(output) / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_stage1_trains_and_saves_a_loadable_trainable_only_folder(shapes: Path, tmp_path: Path) -> None:
    build_tiny_stage1(tmp_path / "start", captions(shapes))
    before = Blip2Stage1Model.from_pretrained(tmp_path / "start")
    assert main(["train", "blip2-stage1", *train_args(tmp_path / "start", shapes, tmp_path / "out")]) == 0
    losses = logged_losses(tmp_path / "out")
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    after = Blip2Stage1Model.from_pretrained(tmp_path / "out")
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert not any(key.startswith("vision_model.encoder.") for key in saved)  # frozen: taken from the base
    for name, value in before.state_dict().items():
        changed = not torch.equal(value, after.state_dict()[name])
        frozen = name.startswith(("vision_model.encoder.", "vision_model.embeddings."))
        assert changed != frozen or name.endswith("position_embeddings.weight"), name
    assert [p.name for p in sorted((tmp_path / "out").glob("checkpoint-*/" + COMPLETE_MARKER))]


def test_stage2_trains_the_qformer_and_leaves_the_llm(shapes: Path, tmp_path: Path) -> None:
    build_tiny_predictor(tmp_path / "start", "opt", captions(shapes), weight_std=0.05)
    before = Blip2Model.from_pretrained(tmp_path / "start")
    assert main(["train", "blip2-stage2", *train_args(tmp_path / "start", shapes, tmp_path / "out")]) == 0
    losses = logged_losses(tmp_path / "out")
    assert losses[-1] < losses[0]
    after = Blip2Model.from_pretrained(tmp_path / "out")
    for name, value in before.state_dict().items():
        if name.startswith("language_model.") or name.startswith("vision_model.encoder."):
            assert torch.equal(value, after.state_dict()[name]), name
    assert not torch.equal(before.query_tokens, after.query_tokens)
    assert not torch.equal(before.language_projection.weight, after.language_projection.weight)


def test_last_complete_checkpoint_ignores_a_half_written_one(tmp_path: Path) -> None:
    for step, complete in ((10, True), (20, True), (30, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / COMPLETE_MARKER).write_text("{}")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-20"
    assert last_complete_checkpoint(tmp_path / "nothing-here") is None


@pytest.mark.parametrize("option, message", [
    (["--tensor_parallel_degree", "2"], "tensor-parallel plan"),
    (["--sharding_parallel_degree", "4"], "sharding_parallel_degree 4"),
])
def test_parallel_options_that_cannot_run_stop_before_training(option, message, shapes, tmp_path, capsys) -> None:
    args = train_args(tmp_path / "no-model", shapes, tmp_path / "out", *option)
    assert main(["train", "blip2-stage2", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def copy_shapes(shapes: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(shapes, target)
    return target


def test_corrupt_images_are_skipped_counted_and_capped(shapes: Path, tmp_path: Path, capsys) -> None:
    data = copy_shapes(shapes, tmp_path / "data")
    first = json.loads((data / "annotations/caption_train.json").read_text())[0]["image"]
    (data / first).write_bytes(b"not a jpeg at all")  # 5 captions of 80 point at it: 6% of the samples
    build_tiny_predictor(tmp_path / "start", "opt", captions(shapes), weight_std=0.05)
    args = train_args(tmp_path / "start", data, tmp_path / "out")
    assert main(["train", "blip2-stage2", *args, "--max_bad_image_fraction", "0.1"]) == 0
    summary = capsys.readouterr().err
    assert "15 of 240 images skipped as unreadable" in summary
    assert main(["train", "blip2-stage2", *train_args(tmp_path / "start", data, tmp_path / "out2")]) == 2
    error = capsys.readouterr().err
    assert "could not be read" in error and first.split("/")[-1] in error


def test_missing_image_or_malformed_record_stops_before_training(shapes: Path, tmp_path: Path, capsys) -> None:
    data = copy_shapes(shapes, tmp_path / "data")
    records = json.loads((data / "annotations/caption_train.json").read_text())
    (data / records[7]["image"]).unlink()
    build_tiny_predictor(tmp_path / "start", "opt", captions(shapes), weight_std=0.05)
    assert main(["train", "blip2-stage2", *train_args(tmp_path / "start", data, tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "record 5: field 'image'" in error and records[7]["image"].split("/")[-1] in error
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("checkpoint-*"))

    del records[3]["caption"]
    (data / "annotations/caption_train.json").write_text(json.dumps(records))
    assert main(["train", "blip2-stage2", *train_args(tmp_path / "start", data, tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "caption_train.json" in error and "record 3" in error and "caption" in error


def test_caption_finetuning_trains_the_vit_with_the_prompt(shapes: Path, tmp_path: Path) -> None:
    build_tiny_predictor(tmp_path / "start", "opt", captions(shapes), weight_std=0.05)
    before = Blip2Model.from_pretrained(tmp_path / "start")
    args = train_args(tmp_path / "start", shapes, tmp_path / "out", "--freeze_vit", "false", "--prompt", "a photo of ")
    assert main(["train", "blip2-caption", *args]) == 0
    losses = logged_losses(tmp_path / "out")
    assert losses[-1] < losses[0]
    after = Blip2Model.from_pretrained(tmp_path / "out")
    vit = "vision_model.encoder.layers.0.mlp.fc1.weight"
    assert not torch.equal(before.state_dict()[vit], after.state_dict()[vit]), "caption fine-tuning trains the ViT"
    assert torch.equal(before.language_model.lm_head.weight, after.language_model.lm_head.weight)
    settings = json.loads((tmp_path / "out" / "mixkit_settings.json").read_text())
    assert settings["prompt"] == "a photo of", "the folder remembers its caption prompt"


def test_frozen_parts_in_bf16_train_and_save_fp32_trainable_weights(shapes: Path, tmp_path: Path) -> None:
    build_tiny_predictor(tmp_path / "start", "opt", captions(shapes), weight_std=0.05)
    assert main(["train", "blip2-stage2", *train_args(tmp_path / "start", shapes, tmp_path / "fp32")]) == 0
    args = train_args(tmp_path / "start", shapes, tmp_path / "bf16", "--frozen_dtype", "bf16")
    assert main(["train", "blip2-stage2", *args]) == 0
    fp32, bf16 = logged_losses(tmp_path / "fp32"), logged_losses(tmp_path / "bf16")
    assert bf16[-1] < bf16[0]
    assert bf16[0] == pytest.approx(fp32[0], rel=2e-2)  # bf16 frozen towers move the loss only slightly
    saved = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert saved and all(value.dtype == torch.float32 for value in saved.values())
    assert not any(key.startswith("language_model.") for key in saved)


def test_frozen_bf16_refuses_to_save_frozen_weights(shapes: Path, tmp_path: Path, capsys) -> None:
    args = train_args(tmp_path / "no-model", shapes, tmp_path / "out", "--frozen_dtype", "bf16",
                      "--save_trainable_only", "false")
    assert main(["train", "blip2-stage2", *args]) == 2
    assert "save_trainable_only" in capsys.readouterr().err
