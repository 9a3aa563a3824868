"""Sharded data parallelism on CPU (gloo), 2 processes under torchrun: FSDP2 and DeepSpeed ZeRO-2 train exactly
as DDP does, and a killed FSDP2 run resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.launch import ENV, kill_after, standalone

CONFIGS = Path(__file__).parents[2] / "configs"
STEPS = 12  # 20 captions at a global batch of 4: 5 steps per epoch, so the run crosses two epoch boundaries


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    from mixkit.testing import build_tiny_training_setup, update_config

    shapes, model = tmp_path_factory.mktemp("shapes"), tmp_path_factory.mktemp("tiny-opt")
    build_tiny_training_setup(shapes, model)
    # Dropout on everywhere (the frozen LLM's too, as LAVIS): both layouts draw the same masks on each rank, and a
    # resumed run must restore every process's RNG state to reproduce them.
    update_config(model, "text_config", dropout=0.1)
    return model, shapes


def train_command(setup: tuple[Path, Path], output: Path, *extra: str) -> list[str]:
    model, shapes = setup
    return standalone(2, "mixkit.train.train_cli", "blip2-stage2", "--model_name_or_path", str(model),
                      "--dataset_name", "custom_caption",
                      "--data_files", str(shapes / "annotations/caption_train.json"), "--image_root", str(shapes),
                      "--image_size", "32", "--output_dir", str(output),
                      "--per_device_train_batch_size", "2", "--max_steps", str(STEPS), "--warmup_steps", "2",
                      "--logging_steps", "1", "--learning_rate", "1e-3", "--save_strategy", "steps",
                      "--save_steps", "3", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
                      "--use_cpu", "true", *extra)


def train(setup: tuple[Path, Path], output: Path, *extra: str, timeout: float = 180) -> str:
    done = subprocess.run(train_command(setup, output, *extra), capture_output=True, text=True, timeout=timeout,
                          env=ENV, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def losses(output: Path) -> list[float]:
    state = json.loads((output / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def max_weight_difference(a: Path, b: Path) -> float:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert first.keys() == second.keys() and "query_tokens" in first
    return max((first[name] - second[name]).abs().max().item() for name in first)


@pytest.fixture(scope="module")
def ddp(setup, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ddp")
    assert "DDP over 2 processes" in train(setup, output)
    return output


@pytest.fixture(scope="module")
def fsdp(setup, tmp_path_factory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("fsdp")
    return output, train(setup, output, "--sharding_parallel_degree", "2")


def test_fsdp2_trains_as_ddp_does(ddp, fsdp) -> None:
    output, log = fsdp
    assert "parallelism         FSDP2 (fully_shard) over 2 processes" in log  # the summary names what ran
    held = [line for line in log.splitlines() if "this process holds" in line]
    assert len(held) == 2  # both processes hold about half of the values, not the whole model
    for line in held:
        local, total = (int(n.replace(",", "")) for n in line.split("holds ")[1].split(" parameter")[0].split(" of "))
        assert local < 0.6 * total
    # Measured: identical to the last bit (fp32, 2 processes: FSDP2's reduce-scatter averages the same two numbers
    # DDP's all-reduce does); 1e-5 leaves room for other reduction orders.
    assert losses(output) == pytest.approx(losses(ddp), rel=1e-5, abs=1e-5) and len(losses(ddp)) == STEPS
    assert max_weight_difference(output, ddp) <= 1e-5
    # The optimizer file holds full AdamW states keyed by name, for the trainable parameters only: frozen ones
    # (ViT, LLM) never got gradients or states.
    state = torch.load(output / f"checkpoint-{STEPS}" / "optimizer.pt", weights_only=True)
    trainable = set(load_file(str(output / "model.safetensors")))
    assert {name.removeprefix("model.") for name in state["state"]} == trainable
    assert all(value["exp_avg"].shape == value["exp_avg_sq"].shape for value in state["state"].values())


def test_killed_fsdp2_run_resumes_to_the_same_weights(setup, fsdp, tmp_path) -> None:
    from mixkit.train.trainer import COMPLETE_MARKER, last_complete_checkpoint

    whole, _ = fsdp
    killed = tmp_path / "killed"
    status = kill_after(train_command(setup, killed, "--sharding_parallel_degree", "2"),
                        killed / "checkpoint-6" / COMPLETE_MARKER)
    assert status == -9, "the run ended before it could be killed"
    assert not (killed / "model.safetensors").exists()
    newest = last_complete_checkpoint(killed)
    assert newest is not None and int(newest.name.split("-")[1]) < STEPS
    train(setup, killed, "--sharding_parallel_degree", "2", "--resume_from_checkpoint", "last")
    assert losses(killed) == losses(whole)
    # Measured: 0.0. Weights, AdamW moments, the schedule, the data order and every process's dropout RNG resumed.
    assert max_weight_difference(killed, whole) <= 1e-6


def test_deepspeed_zero2_trains_as_ddp_does(setup, ddp, tmp_path) -> None:
    pytest.importorskip("deepspeed")
    # The first DeepSpeed run on a machine compiles its shared-memory CPU collectives (~35 s on 2 cores, cached).
    log = train(setup, tmp_path / "zero2", "--deepspeed", str(CONFIGS / "deepspeed_zero2.json"), timeout=400)
    assert "parallelism         DeepSpeed ZeRO-2 over 2 processes" in log
    # Measured: identical to the last bit. ZeRO-2 averages each gradient over the same two processes and AdamW
    # then steps its fp32 partition; only the gradient norm for clipping is summed in another order (partition by
    # partition), which can move the clip factor by ~1e-7 relative: hence rel 1e-5, and 1e-6 on weights ~0.05.
    assert losses(tmp_path / "zero2") == pytest.approx(losses(ddp), rel=1e-5)
    assert max_weight_difference(tmp_path / "zero2", ddp) <= 1e-6


def test_fsdp2_is_not_combined_with_another_way_to_shard(monkeypatch) -> None:
    from mixkit.train.arguments import Blip2TrainingArguments
    from mixkit.train.train_cli import TrainConfigError, check_parallelism

    args = Blip2TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, sharding_parallel_degree=2)
    monkeypatch.setenv("WORLD_SIZE", "2")  # after the arguments: they would set up a process group for it
    check_parallelism(args)  # FSDP2 alone is fine
    args.deepspeed = str(CONFIGS / "deepspeed_zero2.json")
    with pytest.raises(TrainConfigError, match="cannot be combined with --deepspeed"):
        check_parallelism(args)
