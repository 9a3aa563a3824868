"""Sharded evaluation: the runner's pieces, a gloo group with an empty shard, and torchrun == 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from mixkit.eval import sharding
from mixkit.utils import distributed
from mixkit.utils.io import write_json

# The model stack is imported inside the tests that need it: spawned workers re-import this
# module, and each would otherwise spend seconds importing `transformers` for nothing.

PATTERN = "images/val/shapes_val_{image_id:06d}.jpg"


def test_merge_keeps_one_record_per_id_sorted():
    records = [{"image_id": 3, "caption": "c"}, {"image_id": 1, "caption": "a"}, {"image_id": 3, "caption": "x"}]
    assert sharding.merge_records(records, "image_id") == [{"image_id": 1, "caption": "a"},
                                                         {"image_id": 3, "caption": "c"}]


def test_shards_cover_every_item_once():
    items = list(range(7))
    shards = [distributed.shard(items, distributed.DistContext(rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == items and shards[2] == [2, 5]


def test_partial_writer_flushes_every_n_batches_and_reader_skips_torn_lines(tmp_path):
    writer = sharding.PartialWriter(tmp_path, rank=1, every=2)
    writer.add([{"question_id": 1}])
    assert not writer.path.exists()  # not yet: one batch of two
    writer.add([{"question_id": 2}])
    writer.add([{"question_id": 3}])
    writer.flush()
    with writer.path.open("a") as handle:
        handle.write('{"question_id": 4')  # a process killed mid-line
    assert [r["question_id"] for r in sharding.read_partial(tmp_path, "question_id")] == [1, 2, 3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = distributed.init_distributed()
    options = sharding.RunOptions(Path(out), "image_id", batch_size=1)
    process = lambda batch: [{"image_id": unit, "caption": f"rank{rank}"} for unit in batch]  # noqa: E731
    merged = sharding.run_sharded([5], lambda unit: [unit], process, options, ctx)
    if ctx.is_main:
        write_json(Path(out) / "merged.json", merged)
    distributed.close_distributed(ctx)


def test_a_rank_with_an_empty_shard_does_not_hang(tmp_path):
    # One item, two ranks: rank 1 has nothing, yet must take part in every collective.
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "merged.json").read_text()) == [{"image_id": 5, "caption": "rank0"}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    from mixkit.testing import build_tiny_predictor
    from mixkit.data.shapes import ShapesConfig, write_shapes_dataset

    checkpoint = tmp_path_factory.mktemp("tiny-opt")
    build_tiny_predictor(checkpoint, "opt")
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, ShapesConfig(num_train=1, num_val=3, num_test=1, image_size=32))
    return checkpoint, root


def test_torchrun_two_processes_match_one_process_byte_for_byte(setup, tmp_path):
    from mixkit.data.shapes import ShapesPaths
    from mixkit.eval import vqa_eval

    checkpoint, root = setup
    shapes = ShapesPaths.under(root)
    common = ["--model", str(checkpoint), "--questions", str(shapes.vqa_questions["val"]),
              "--annotations", str(shapes.vqa_annotations["val"]), "--image-root", str(shapes.root),
              "--image-pattern", PATTERN, "--batch-size", "1", "--max-new-tokens", "4", "--num-beams", "2"]
    assert vqa_eval.main(common + ["--output-dir", str(tmp_path / "one")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mixkit.eval.vqa_eval", *common, "--output-dir", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = tmp_path / "one" / "val_vqa_result.json", tmp_path / "two" / "val_vqa_result.json"
    assert one.read_bytes() == two.read_bytes()
    assert sorted(p.name for p in (tmp_path / "two" / "partial").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    metrics = json.loads(done.stdout)  # only rank 0 prints
    assert metrics["world_size"] == 2
    assert metrics["scores"] == json.loads((tmp_path / "one" / "metrics.json").read_text())["scores"]
