"""Progress output that suits its stream: tqdm on a terminal, plain lines (never carriage returns) elsewhere."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.testing import build_tiny_predictor
from mixkit.utils.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_tqdm_and_a_log_gets_lines() -> None:
    assert isinstance(progress_bar(total=3, file=Terminal()), tqdm)
    log = io.StringIO()
    bar = progress_bar(range(4), desc="eval", unit="item", file=log)
    assert isinstance(bar, LineProgress)
    assert list(bar) == [0, 1, 2, 3]
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith("eval: 4/4 (100%)") and "\r" not in log.getvalue()


def test_lines_come_at_the_interval_with_the_postfix() -> None:
    log = io.StringIO()
    bar = LineProgress(total=10, desc="train", unit="step", file=log, interval=0.0)
    bar.set_postfix(loss="1.2345")
    bar.update(2)
    bar.update(3)
    bar.close()
    bar.close()  # closing twice writes once
    lines = log.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines] == ["train: 2/10 (20%)", "train: 5/10 (50%)", "train: 5/10 (50%)"]
    assert all(line.endswith("loss=1.2345") for line in lines)
    quiet = io.StringIO()
    slow = LineProgress(total=10, file=quiet, interval=3600)
    slow.update(5)
    assert quiet.getvalue() == ""  # nothing until the interval passes or the bar closes


def test_a_training_run_logged_to_a_file_has_no_carriage_returns(tmp_path: Path) -> None:
    shapes = tmp_path / "shapes"
    write_shapes_dataset(shapes, ShapesConfig(num_train=8, num_val=1, num_test=1, image_size=32))
    build_tiny_predictor(tmp_path / "opt", "opt")
    argv = [sys.executable, "-m", "mixkit.cli", "train", "blip2-stage2", "--model_name_or_path", str(tmp_path / "opt"),
            "--dataset_name", "custom_caption", "--data_files", str(shapes / "annotations/caption_train.json"),
            "--image_root", str(shapes), "--image_size", "32", "--output_dir", str(tmp_path / "out"),
            "--per_device_train_batch_size", "4", "--max_steps", "4", "--logging_steps", "2",
            "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true"]
    env = {**os.environ, "MIXKIT_PROGRESS_SECONDS": "0"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "\r" not in output
    assert "blip2-stage2: 4/4 (100%)" in result.stderr and "loss=" in result.stderr
    assert not any(line.startswith("{") for line in result.stdout.splitlines())  # no raw log dicts on stdout
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"]
