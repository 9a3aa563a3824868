"""Evaluation across 2 "nodes" on loopback (two torchrun launchers, one process each, a c10d rendezvous):
the same result file, byte for byte, as 1 process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.launch import free_port, run_together, two_nodes

PATTERN = "images/val/shapes_val_{image_id:06d}.jpg"


def test_two_nodes_match_one_process_byte_for_byte(tmp_path: Path) -> None:
    from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
    from mixkit.eval import vqa_eval
    from mixkit.testing import build_tiny_predictor

    build_tiny_predictor(tmp_path / "model", "opt")
    write_shapes_dataset(tmp_path / "shapes", ShapesConfig(num_train=1, num_val=3, num_test=1, image_size=32))
    shapes = ShapesPaths.under(tmp_path / "shapes")
    common = ["--model", str(tmp_path / "model"), "--questions", str(shapes.vqa_questions["val"]),
              "--annotations", str(shapes.vqa_annotations["val"]), "--image-root", str(shapes.root),
              "--image-pattern", PATTERN, "--batch-size", "1", "--max-new-tokens", "4", "--num-beams", "2"]
    assert vqa_eval.main(common + ["--output-dir", str(tmp_path / "one")]) == 0

    results = run_together(two_nodes(free_port(), "mixkit.eval.vqa_eval", *common, "--output-dir",
                                     str(tmp_path / "nodes")), timeout=180)
    for status, _, stderr in results:
        assert status == 0, stderr[-2000:]
    one, nodes = tmp_path / "one" / "val_vqa_result.json", tmp_path / "nodes" / "val_vqa_result.json"
    assert one.read_bytes() == nodes.read_bytes()
    assert sorted(p.name for p in (tmp_path / "nodes" / "partial").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    printed = [json.loads(stdout) for _, stdout, _ in results if stdout.strip()]  # only rank 0 prints
    assert len(printed) == 1 and printed[0]["world_size"] == 2
