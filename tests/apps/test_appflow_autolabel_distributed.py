"""`mixkit app run auto_label` sharded over `torchrun` (2 processes, gloo on CPU): the COCO file of 1 process."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mixkit.cli import main
from tests.launch import run_together, standalone


def test_torchrun_two_processes_write_the_one_process_coco_file(vision_models, image_folder, tmp_path: Path,
                                                                capsys) -> None:
    models = [str(vision_models.blip2), str(vision_models.grounding_dino), str(vision_models.sam)]
    common = ["app", "run", "auto_label", "--models", *models, "--image", str(image_folder), "--json"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (tests/launch.py ENV): equal float reductions need it
    try:
        assert main(common + ["--output", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    [(code, stdout, stderr)] = run_together([standalone(2, "mixkit.cli", *common, "--output", str(tmp_path / "two"))],
                                            timeout=240)
    assert code == 0, stderr[-2000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in (two / "partial").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    assert (one / "annotations.json").read_bytes() == (two / "annotations.json").read_bytes()
    coco = json.loads((two / "annotations.json").read_text())
    assert sorted(image["file_name"] for image in coco["images"]) == ["a.png", "sub/b.jpg"]
    record = json.loads(stdout)  # only rank 0 prints
    assert record["num_images"] == 2 and record["num_annotations"] == len(coco["annotations"])
    assert sorted(p.name for p in (two / "pictures").iterdir()) == sorted(p.name for p in (one / "pictures").iterdir())
