"""`mixkit train albef-retrieval | albef-pretrain` on the shapes data: the loss goes down, the trained folder
loads in `AlbefPipeline` and matches its own images and captions better than the untrained model and chance; the
pretraining stage trains ITC + ITM + MLM; only trainable parameters get gradients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.testing import build_tiny_albef
from mixkit.train.albef_stage import build_albef_stage, load_albef_for
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.collators import to_batch


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """8 shapes images (5 captions each) at 32 px, and a tiny random ALBEF (pretraining layout) whose tokenizer
    knows their words."""
    shapes, model = tmp_path_factory.mktemp("shapes"), tmp_path_factory.mktemp("tiny-albef")
    write_shapes_dataset(shapes, ShapesConfig(num_train=8, num_val=0, num_test=0, image_size=32))
    records = json.loads((shapes / "annotations/caption_train.json").read_text())
    build_tiny_albef(model, "AlbefForPreTraining", [record["caption"] for record in records], weight_std=0.05)
    return model, shapes


def cli_args(stage: str, model: Path, shapes: Path, output: Path, steps: int, *extra: str) -> list[str]:
    return ["train", stage, "--model_name_or_path", str(model), "--freeze_vit", "false", "--dataset_name",
            "custom_caption", "--data_files", str(shapes / "annotations/caption_train.json"), "--image_root",
            str(shapes), "--image_size", "32", "--max_text_length", "24", "--output_dir", str(output),
            "--per_device_train_batch_size", "8", "--max_steps", str(steps), "--warmup_steps", "2",
            "--logging_steps", "1", "--learning_rate", "2e-3", "--eta_min", "0", "--queue_size", "16",
            "--momentum", "0.9", "--save_strategy", "steps", "--save_steps", str(steps), "--report_to", "none",
            "--disable_tqdm", "true", "--seed", "0", "--use_cpu", "true", *extra]


def losses_of(folder: Path) -> list[float]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def image_to_caption_top1(folder: Path, shapes: Path) -> float:
    """Top-1 over the 8 training images: is each image's own first caption the best ITC match?"""
    from mixkit.pipelines.albef import AlbefPipeline

    records = json.loads((shapes / "annotations/caption_train.json").read_text())
    firsts = {}
    for record in records:
        firsts.setdefault(record["image"], record["caption"])
    images, captions = [shapes / image for image in firsts], list(firsts.values())
    pipeline = AlbefPipeline.from_pretrained(folder, device="cpu")
    tokens = pipeline.tokenize(captions)
    sims = pipeline.itc_similarity(pipeline.image_features(images).image_feats,
                                   pipeline.text_features(tokens.input_ids, tokens.attention_mask))
    return (sims.argmax(dim=1) == torch.arange(len(images))).float().mean().item()


def test_albef_retrieval_lowers_the_loss_and_beats_the_untrained_model(setup, tmp_path: Path) -> None:
    model, shapes = setup
    assert main(cli_args("albef-retrieval", model, shapes, tmp_path / "out", 12)) == 0
    losses = losses_of(tmp_path / "out/checkpoint-12")
    assert len(losses) == 12 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses
    trained, untrained = image_to_caption_top1(tmp_path / "out", shapes), image_to_caption_top1(model, shapes)
    print(f"ALBEF retrieval on shapes: image->caption top-1 trained {trained:.3f}, untrained {untrained:.3f}, "
          f"chance {1 / 8:.3f}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert trained > max(untrained, 1 / 8)
    config = json.loads((tmp_path / "out/config.json").read_text())
    assert config["architectures"] == ["AlbefForRetrieval"] and config["model_type"] == "albef"


def test_albef_pretrain_trains_itc_itm_and_mlm(setup, tmp_path: Path) -> None:
    model, shapes = setup
    data = DataArguments(dataset_name="custom_caption", data_files=[str(shapes / "annotations/caption_train.json")],
                         image_root=str(shapes), image_size=32, max_text_length=24)
    parts = build_albef_stage("albef-pretrain", ModelArguments(model_name_or_path=str(model), freeze_vit=True,
                                                               queue_size=16), data)
    samples = [parts.dataset[index] for index in range(4)]
    batch = to_batch(parts.batch_type, parts.collator(samples))
    assert batch.image_ids is None and batch.mlm_input_ids is not None
    losses = parts.task.compute(parts.model.train(), batch)
    assert all(math.isfinite(float(value)) for value in (losses.itc, losses.itm, losses.mlm)) and losses.mlm > 0
    losses.loss.backward()
    for name, parameter in parts.model.named_parameters():
        if name.startswith("vision_model."):  # --freeze_vit true: the ViT gets nothing
            assert parameter.grad is None, name
        else:
            assert parameter.requires_grad and parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert all(parameter.grad is None for parameter in parts.task.momentum_model.parameters())


def test_a_vqa_checkpoint_cannot_start_retrieval_training(tmp_path: Path) -> None:
    build_tiny_albef(tmp_path, "AlbefForQuestionAnswering")
    with pytest.raises(ValueError, match="cannot start AlbefForRetrieval"):
        load_albef_for(tmp_path, "AlbefForRetrieval")


def test_resumed_run_continues_the_momentum_copy_queues_and_ramp(setup, tmp_path: Path, caplog) -> None:
    """A run resumed from step 3 ends where the uninterrupted run does, because the checkpoint carries the task's
    state (momentum copy, feature and id queues, the distillation ramp); without that file it would not."""
    import shutil

    from safetensors.torch import load_file

    from mixkit.train.trainer import TASK_STATE_FILE

    model, shapes = setup
    whole = tmp_path / "whole"
    assert main(cli_args("albef-retrieval", model, shapes, whole, 6, "--save_steps", "3", "--alpha", "0.4")) == 0
    state = load_file(str(whole / "checkpoint-3" / TASK_STATE_FILE))
    assert int(state["_extra_state"]) == 3 * 8  # samples seen: the ramp's position
    assert {"image_queue.features", "text_queue.features", "id_queue.ids", "image_queue.pointer"} <= set(state)
    assert any(name.startswith("momentum_model.") for name in state)
    reference = load_file(str(whole / "model.safetensors"))

    def resumed(name: str, drop_task_state: bool) -> dict[str, torch.Tensor]:
        output = tmp_path / name
        output.mkdir()
        shutil.copytree(whole / "checkpoint-3", output / "checkpoint-3")
        if drop_task_state:
            (output / "checkpoint-3" / TASK_STATE_FILE).unlink()
        assert main(cli_args("albef-retrieval", model, shapes, output, 6, "--save_steps", "3", "--alpha", "0.4",
                             "--resume_from_checkpoint", str(output / "checkpoint-3"))) == 0
        for key, value in load_file(str(whole / "checkpoint-6" / TASK_STATE_FILE)).items():
            if not drop_task_state:
                torch.testing.assert_close(load_file(str(output / "checkpoint-6" / TASK_STATE_FILE))[key], value,
                                           rtol=0, atol=1e-6)
        return load_file(str(output / "model.safetensors"))

    continued = resumed("continued", drop_task_state=False)
    assert continued.keys() == reference.keys()
    assert max((continued[k] - reference[k]).abs().max().item() for k in reference) < 1e-6
    with caplog.at_level("WARNING", logger="mixkit.train.trainer"):
        restarted = resumed("restarted", drop_task_state=True)
    assert "start again from the weights" in caplog.text
    assert max((restarted[k] - reference[k]).abs().max().item() for k in reference) > 1e-4, \
        "the control: without the task state the resumed run must end elsewhere"


def test_fsdp_trains_as_ddp_and_resumes_exactly_with_the_task_state(setup, tmp_path: Path) -> None:
    """2 processes: under FSDP2 the momentum copy follows every parameter as under DDP (weights and task state
    equal after 6 steps; the EMA once lost the updates of parameters outside the layer blocks), the gathered
    task state goes to its own file (not into the model's weights), and a run resumed from step 3 ends with the
    weights and task state of the uninterrupted run."""
    import shutil
    import subprocess

    from safetensors.torch import load_file

    from mixkit.train.trainer import TASK_STATE_FILE
    from tests.launch import ENV, standalone

    model, shapes = setup

    def run(output: Path, *extra: str, sharded: bool = True) -> None:
        args = cli_args("albef-retrieval", model, shapes, output, 6, "--save_steps", "3", "--alpha", "0.4",
                        "--per_device_train_batch_size", "4", "--sharding_parallel_degree", "2" if sharded else "1",
                        *extra)[2:]
        done = subprocess.run(standalone(2, "mixkit.train.train_cli", "albef-retrieval", *args), env=ENV,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run(whole)
    weights = load_file(str(whole / "model.safetensors"))
    assert not any(name.startswith("task.") for name in weights)
    assert int(load_file(str(whole / "checkpoint-3" / TASK_STATE_FILE))["_extra_state"]) == 3 * 8
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    run(resumed, "--resume_from_checkpoint", str(resumed / "checkpoint-3"))
    run(tmp_path / "ddp", sharded=False)

    def largest_difference(first: Path, second: Path, name: str, skip: str = "\0") -> float:
        """The largest difference over the tensors of two files (names containing `skip` left out: the momentum
        copy's ITM head is not followed, LAVIS's pairs leave it out, and keeps each run's random start)."""
        ours, theirs = load_file(str(first / name)), load_file(str(second / name))
        assert ours.keys() == theirs.keys()
        return max((ours[k].double() - theirs[k].double()).abs().max().item() for k in ours if skip not in k)

    for name in ("model.safetensors", f"checkpoint-6/{TASK_STATE_FILE}"):
        assert largest_difference(resumed, whole, name) < 1e-6, name
    assert largest_difference(tmp_path / "ddp", whole, "model.safetensors") < 1e-5
    assert largest_difference(tmp_path / "ddp", whole, f"checkpoint-6/{TASK_STATE_FILE}", skip="itm_head") < 1e-5
