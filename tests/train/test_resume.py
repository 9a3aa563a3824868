"""Kill a training run with SIGKILL mid-epoch, resume from the last complete checkpoint: same weights as no kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from mixkit.testing import build_tiny_predictor, update_config
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.train.train_cli import main
from mixkit.train.trainer import COMPLETE_MARKER, last_complete_checkpoint


def run_args(model: Path, shapes: Path, output: Path, *extra: str) -> list[str]:
    # 10 captions at batch 2: 5 steps per epoch, 12 in all; checkpoint-6 falls mid-epoch 2.
    return ["blip2-stage2", "--model_name_or_path", str(model), "--dataset_name", "custom_caption",
            "--data_files", str(shapes / "annotations/caption_train.json"), "--image_root", str(shapes),
            "--image_size", "32", "--output_dir", str(output), "--per_device_train_batch_size", "2",
            "--max_steps", "12", "--warmup_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3",
            "--save_strategy", "steps", "--save_steps", "3", "--report_to", "none", "--disable_tqdm", "true",
            "--seed", "0", *extra]


def kill_after_checkpoint(command: list[str], marker: Path, timeout: float = 120.0) -> int:
    """Start `command`, SIGKILL it as soon as `marker` exists; the exit status (-9 when killed in time)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + timeout
    while not marker.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    return process.wait()


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    shapes = tmp_path / "shapes"
    write_shapes_dataset(shapes, ShapesConfig(num_train=2, num_val=1, num_test=1, image_size=32))
    records = json.loads((shapes / "annotations/caption_train.json").read_text())
    build_tiny_predictor(tmp_path / "model", "opt", [r["caption"] for r in records], weight_std=0.05)
    update_config(tmp_path / "model", "text_config", dropout=0.1)  # the frozen OPT's dropout is on, as in LAVIS
    # Random crops, flips (seeded per sample, epoch and seed), the Q-Former's and the frozen LLM's dropout (the
    # RNG state the checkpoint restores) all stay on: the resumed run must reproduce them exactly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed subprocess (OMP_NUM_THREADS=1): same float reductions
    try:
        assert main(run_args(tmp_path / "model", shapes, tmp_path / "whole")) == 0
        resume_and_compare(tmp_path, shapes)
    finally:
        torch.set_num_threads(threads)


def resume_and_compare(tmp_path: Path, shapes: Path) -> None:

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "mixkit.train.train_cli", *run_args(tmp_path / "model", shapes, killed)]
    status = kill_after_checkpoint(command, killed / "checkpoint-6" / COMPLETE_MARKER)
    assert status == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model.safetensors").exists()  # the final save never happened
    newest = last_complete_checkpoint(killed)
    assert newest is not None and int(newest.name.split("-")[1]) < 12

    # A newer checkpoint without the marker (a save cut short), holding garbage: resume must not take it.
    half_written = killed / "checkpoint-11"
    shutil.copytree(newest, half_written)
    (half_written / COMPLETE_MARKER).unlink()
    (half_written / "model.safetensors").write_bytes(b"not a safetensors file")
    assert last_complete_checkpoint(killed) == newest

    assert main(run_args(tmp_path / "model", shapes, killed, "--resume_from_checkpoint", "last")) == 0
    state = json.loads((killed / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(killed / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    worst = max((whole[name] - resumed[name]).abs().max().item() for name in whole)
    assert worst <= 1e-6, worst
    # The run did resume (not restart): the reference's weights differ from the starting point.
    start = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert not torch.equal(start["query_tokens"], whole["query_tokens"])
