"""`mixkit demo --family clip` at a tiny scale: training lowers the loss and the trained model beats chance and the
untrained model at zero-shot on held-out images; metrics.json and report.html have what the BLIP-2 demo's have;
the zero-shot tasks' labels and accuracy arithmetic against hand counts. The full-size figures are in the README
(measured by running `mixkit demo --family clip`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mixkit.apps.demo.clip_config import ClipDemoConfig
from mixkit.apps.demo.clip_workflow import run_clip_demo
from mixkit.apps.demo.clip_zeroshot import build_tasks, shape_labels, top1_accuracy
from mixkit.data.shapes import Scene, Shape

REQUIRED_KEYS = {"zero_shot_top1", "zero_shot_top1_untrained", "zero_shot_chance", "zero_shot", "first_loss",
                 "final_loss", "logit_scale", "wall_time_s", "cpu_time_s", "peak_memory_mib", "config", "versions"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("clip-demo")
    return output, run_clip_demo(ClipDemoConfig.tiny(), output)


def test_metrics_file_has_the_promised_keys(tiny_run: tuple[Path, dict]) -> None:
    output, metrics = tiny_run
    on_disk = json.loads((output / "metrics.json").read_text())
    assert REQUIRED_KEYS <= set(on_disk)
    assert set(on_disk["zero_shot"]) == {"shape", "background", "count"}
    assert on_disk["zero_shot_top1"] == metrics["zero_shot"]["shape"]["top1"]
    assert on_disk["zero_shot"]["shape"]["num_labels"] == 24
    assert on_disk["zero_shot"]["background"]["num_images"] == ClipDemoConfig.tiny().num_test
    assert 0 < on_disk["logit_scale"] <= 100


def test_training_lowers_the_loss_and_beats_chance_and_the_untrained_model(tiny_run: tuple[Path, dict]) -> None:
    _, metrics = tiny_run
    assert metrics["final_loss"] < 0.9 * metrics["first_loss"]
    background = metrics["zero_shot"]["background"]  # 3 colours: what 60 steps at batch 64 learn for sure
    assert background["top1"] > background["chance"] + 25 and background["top1"] > background["untrained_top1"] + 25


def test_report_references_existing_files(tiny_run: tuple[Path, dict]) -> None:
    output, _ = tiny_run
    page = (output / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert [s for s in sources if s.endswith(".png")] == ["loss_clip.png"]
    assert len([s for s in sources if s.endswith(".jpg")]) == ClipDemoConfig.tiny().num_examples
    for source in sources:
        assert (output / source).is_file(), source
    assert "Zero-shot top-1" in page and "there is {}" in page
    for folder in ("untrained", "checkpoint"):  # transformers CLIP folders, as `mixkit predict classify` takes
        assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
            path.name for path in (output / "work" / folder).iterdir()}


def test_command_line_runs_the_clip_workflow(tiny_run: tuple[Path, dict], monkeypatch, capsys, tmp_path) -> None:
    from mixkit.apps.demo import clip_workflow
    from mixkit.cli import main

    calls = []
    monkeypatch.setattr(clip_workflow, "run_clip_demo", lambda config, output: calls.append(config) or tiny_run[1])
    assert main(["demo", "--family", "clip", "--output", str(tmp_path), "--seed", "3"]) == 0
    assert calls == [ClipDemoConfig(seed=3)]
    out = capsys.readouterr().out
    assert "zero-shot top-1 shape" in out and "report:" in out


def test_tasks_and_accuracy_against_hand_counts() -> None:
    def scene(background: str, *shapes: tuple[str, str]) -> Scene:
        drawn = tuple(Shape(kind, colour, "small", row, 0, 0.2, 0.2) for row, (colour, kind) in enumerate(shapes))
        return Scene(background, "solid", 0, drawn)

    scenes = [scene("gray", ("orange", "circle")), scene("white", ("red", "cross"), ("blue", "square")),
              scene("black", ("red", "square"))]
    tasks = {task.name: task for task in build_tasks(scenes, max_shapes=3)}
    labels = shape_labels()
    assert len(labels) == 24 and "an orange circle" in labels and "a red cross" in labels
    assert tasks["shape"].image_indices == (0, 2)  # one-shape images only
    assert [labels[i] for i in tasks["shape"].targets] == ["an orange circle", "a red square"]
    assert tasks["background"].targets == (0, 2, 1)  # gray, white, black in BACKGROUND_COLOURS order
    assert [tasks["count"].labels[i] for i in tasks["count"].targets] == ["one shape", "two shapes", "one shape"]
    assert tasks["count"].chance == pytest.approx(1 / 3)
    probabilities = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    assert top1_accuracy(probabilities, [1, 0, 0, 1]) == pytest.approx(75.0)
