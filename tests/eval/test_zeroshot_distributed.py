"""`mixkit eval zeroshot` under `torchrun` with 2 processes (gloo on CPU) writes the 1-process results exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.launch import run_together, standalone

NUM_IMAGES = 5  # odd: the two ranks get shards of different sizes (3 and 2)


def _write_shapes_inputs(folder: Path) -> tuple[Path, Path]:
    from mixkit.data.shapes import KINDS, ShapesConfig, generate_scene, render_scene

    rng = random.Random(1)
    (folder / "img").mkdir(parents=True)
    records = []
    for index in range(NUM_IMAGES):
        scene = generate_scene(rng, ShapesConfig(max_shapes=1))
        render_scene(scene, 32).save(folder / "img" / f"{index}.png")
        records.append({"image": f"img/{index}.png", "label": scene.shapes[0].kind})
    (folder / "images.json").write_text(json.dumps(records))
    (folder / "classes.json").write_text(json.dumps(list(KINDS)))
    return folder / "images.json", folder / "classes.json"


def test_torchrun_two_processes_write_the_one_process_metrics(tmp_path: Path, capsys) -> None:
    from mixkit.eval import zeroshot_eval
    from mixkit.testing import build_tiny_clip

    build_tiny_clip(tmp_path / "clip")
    images, classes = _write_shapes_inputs(tmp_path / "data")
    common = ["--model", str(tmp_path / "clip"), "--images", str(images), "--classes", str(classes),
              "--templates", str(_templates_file(tmp_path)), "--batch-size", "2"]
    assert zeroshot_eval.main(common + ["--output-dir", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    [(code, stdout, stderr)] = run_together(
        [standalone(2, "mixkit.eval.zeroshot_eval", *common, "--output-dir", str(tmp_path / "two"))], timeout=150)
    assert code == 0, stderr[-2000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in (two / "partial").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    assert (one / "val_zeroshot_result.json").read_bytes() == (two / "val_zeroshot_result.json").read_bytes()
    metrics_one, metrics_two = (json.loads((folder / "metrics.json").read_text()) for folder in (one, two))
    assert (metrics_one.pop("world_size"), metrics_two.pop("world_size")) == (1, 2)
    assert metrics_two == metrics_one  # scores, per-class accuracy, counts, templates: all equal
    assert json.loads(stdout)["scores"] == metrics_one["scores"]  # only rank 0 prints
    assert metrics_one["num_images"] == NUM_IMAGES


def _templates_file(tmp_path: Path) -> Path:
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(["a photo of a {}.", "a drawing of a {}."]))
    return path
