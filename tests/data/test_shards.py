"""Tar shards: writing (counts, skipping, determinism), reading back equal to the map-style datasets, splitting."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from mixkit.data import shards as sh
from mixkit.data.shards import index as shard_index
from mixkit.data.shards import options as shard_options
from mixkit.data.shards import writer as shard_writer
from mixkit.data.bad_images import SkippedSample, collate_samples
from mixkit.data.loading import load_dataset
from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.shards import (ShardedCaptionDataset, ShardedVqaDataset, ShardIndex, ShardStreamConfig,
                                assign_shards, iter_tar_samples, write_shards)
from mixkit.data.transforms import EvalImageTransform, ImageLoadError, ImageProcessorConfig
from mixkit.data.validation import AnnotationError

SIZE = 32
PER_SHARD = 5
TRANSFORM = EvalImageTransform(ImageProcessorConfig(image_size=SIZE))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesPaths:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), ShapesConfig(num_train=12, num_val=2, num_test=2))


@pytest.fixture(scope="module")
def caption_shards(shapes: ShapesPaths, tmp_path_factory: pytest.TempPathFactory) -> sh.ShardsReport:
    out = tmp_path_factory.mktemp("caption_shards")
    return write_shards(shapes.caption_train, "caption_train", shapes.root, out, max_samples_per_shard=PER_SHARD)


def caption_key(sample: dict[str, Any]) -> tuple[int, str]:
    return sample["image_id"], sample["text_input"]


def read_all(dataset: Any) -> list[dict[str, Any]]:
    return list(iter(dataset))


# ------------------------------------------------------------------------------ writing


def test_shard_count_and_index(caption_shards: sh.ShardsReport) -> None:
    assert [s.num_images for s in caption_shards.shards] == [5, 5, 2]  # 12 images, 5 per shard
    assert [s.num_samples for s in caption_shards.shards] == [25, 25, 10]  # 5 captions per image
    index = ShardIndex.load(caption_shards.index_path.parent)
    assert (index.kind, index.num_images, index.num_samples) == ("caption_train", 12, 60)
    assert all(index.path(i).is_file() for i in range(3))
    assert not list(index.root.glob("*.part"))


def test_each_image_is_stored_once_with_its_original_bytes(caption_shards: sh.ShardsReport,
                                                           shapes: ShapesPaths) -> None:
    index = ShardIndex.load(caption_shards.index_path)
    with index.path(0).open("rb") as file:
        key, files = next(iter_tar_samples(file))
    meta = json.loads(files["json"])
    assert key == "000000000" and sorted(files) == ["jpg", "json"]
    assert files["jpg"] == (shapes.root / meta["image"]).read_bytes()
    assert len(meta["records"]) == 5 and all("caption" in r for r in meta["records"])


def test_writing_is_deterministic(shapes: ShapesPaths, caption_shards: sh.ShardsReport, tmp_path: Path) -> None:
    again = write_shards(shapes.caption_train, "caption_train", shapes.root, tmp_path, max_samples_per_shard=PER_SHARD)
    first = caption_shards.index_path.parent
    for name in [s.name for s in again.shards] + [sh.INDEX_NAME]:
        assert (tmp_path / name).read_bytes() == (first / name).read_bytes(), name


def test_byte_limit_starts_new_shards(shapes: ShapesPaths, tmp_path: Path) -> None:
    report = write_shards(shapes.caption_val, "caption_eval", shapes.root, tmp_path, max_bytes_per_shard=1)
    assert [s.num_images for s in report.shards] == [1, 1]  # one image alone is over the limit: its own shard


def test_corrupt_image_is_skipped_and_counted(shapes: ShapesPaths, tmp_path: Path) -> None:
    records = json.loads(shapes.caption_train.read_text())[:10]  # images 0 and 1, 5 captions each
    good = (shapes.root / records[0]["image"]).read_bytes()
    (tmp_path / "broken.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    records.append({"caption": "a broken picture", "image": "broken.jpg"})
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps(records))
    (tmp_path / "images").symlink_to(shapes.root / "images")
    report = write_shards(annotations, "caption_train", tmp_path, tmp_path / "out")
    assert report.skipped_images[0][0] == "broken.jpg" and len(report.skipped_images) == 1
    assert (report.skipped_records, report.num_images, report.num_samples) == (1, 2, 10)
    index = json.loads(report.index_path.read_text())
    assert [s["image"] for s in index["skipped_images"]] == ["broken.jpg"]
    assert "broken" not in [s["text_input"] for s in read_all(ShardedCaptionDataset(report.index_path, TRANSFORM))]


def test_bad_annotations_fail_before_writing(shapes: ShapesPaths, tmp_path: Path) -> None:
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps([{"caption": "x", "image": "images/train/missing.jpg"}]))
    with pytest.raises(AnnotationError, match="file not found"):
        write_shards(annotations, "caption_train", shapes.root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_index_needs_overwrite(shapes: ShapesPaths, tmp_path: Path) -> None:
    write_shards(shapes.caption_val, "caption_eval", shapes.root, tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shards(shapes.caption_val, "caption_eval", shapes.root, tmp_path)
    write_shards(shapes.caption_val, "caption_eval", shapes.root, tmp_path, overwrite=True)


@pytest.mark.parametrize("pattern", ["shard.tar", "a/%d.tar", "%s-%s.tar"])
def test_bad_pattern_is_rejected(shapes: ShapesPaths, tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match="output_pattern"):
        write_shards(shapes.caption_val, "caption_eval", shapes.root, tmp_path, output_pattern=pattern)


# ------------------------------------------------------------------------------ reading


def test_caption_samples_equal_map_style(caption_shards: sh.ShardsReport, shapes: ShapesPaths) -> None:
    mapped = load_dataset("shapes", shapes.root, "train", transform=TRANSFORM, prompt="a picture of ")
    expected = [mapped[i] for i in range(len(mapped))]
    sharded = ShardedCaptionDataset(caption_shards.index_path, TRANSFORM, prompt="a picture of ")
    got = read_all(sharded)
    assert len(sharded) == len(got) == len(expected) == 60
    assert sorted(map(caption_key, got)) == sorted(map(caption_key, expected))
    assert set(got[0]) == set(expected[0])
    image_of = {s["image_id"]: s["image"] for s in expected}
    assert all(torch.equal(s["image"], image_of[s["image_id"]]) for s in got)


def test_vqa_samples_equal_map_style(shapes: ShapesPaths, tmp_path: Path) -> None:
    report = write_shards(shapes.vqa_train, "vqa_train", shapes.root, tmp_path, max_samples_per_shard=PER_SHARD)
    mapped = load_dataset("shapes", shapes.root, "train", task="vqa", transform=TRANSFORM)
    expected = {s["question_id"]: s for s in (mapped[i] for i in range(len(mapped)))}
    got = {s["question_id"]: s for s in read_all(ShardedVqaDataset(report.index_path, TRANSFORM))}
    assert got.keys() == expected.keys() and report.num_samples == len(expected)
    for qid, sample in got.items():
        assert set(sample) == set(expected[qid])
        assert {k: v for k, v in sample.items() if k != "image"} == {
            k: v for k, v in expected[qid].items() if k != "image"}
        assert torch.equal(sample["image"], expected[qid]["image"])


def test_eval_kinds_equal_map_style(shapes: ShapesPaths, tmp_path: Path) -> None:
    caption = write_shards(shapes.caption_val, "caption_eval", shapes.root, tmp_path / "c")
    vqa = write_shards(shapes.vqa_val, "vqa_eval", shapes.root, tmp_path / "v")
    for report, dataset_type, task, key in [(caption, ShardedCaptionDataset, "caption", "image_id"),
                                            (vqa, ShardedVqaDataset, "vqa", "question_id")]:
        mapped = load_dataset("shapes", shapes.root, "val", task=task, transform=TRANSFORM)
        expected = sorted((mapped[i] for i in range(len(mapped))), key=lambda s: s[key])
        got = sorted(read_all(dataset_type(report.index_path, TRANSFORM)), key=lambda s: s[key])
        assert [{k: v for k, v in s.items() if k != "image"} for s in got] == [
            {k: v for k, v in s.items() if k != "image"} for s in expected]
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(got, expected))


def test_wrong_kind_is_refused(caption_shards: sh.ShardsReport) -> None:
    with pytest.raises(ValueError, match="reads vqa_train or vqa_eval shards, not caption_train"):
        ShardedVqaDataset(caption_shards.index_path, TRANSFORM)


# ---------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_read_disjoint_parts_of_everything(caption_shards: sh.ShardsReport, shuffle: bool) -> None:
    parts = []
    for rank in range(2):
        stream = ShardStreamConfig(shuffle=shuffle, seed=3, rank=rank, world_size=2)
        dataset = ShardedCaptionDataset(caption_shards.index_path, TRANSFORM, stream)
        parts.append(Counter(map(caption_key, read_all(dataset))))
        assert len(dataset) == sum(parts[-1].values())
    everything = Counter(map(caption_key, read_all(ShardedCaptionDataset(caption_shards.index_path, TRANSFORM))))
    assert not set(parts[0]) & set(parts[1])
    assert parts[0] + parts[1] == everything


def test_two_workers_read_each_sample_once(caption_shards: sh.ShardsReport) -> None:
    dataset = ShardedCaptionDataset(caption_shards.index_path, TRANSFORM)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_samples)
    seen = Counter(key for batch in loader for key in zip(batch["image_id"].tolist(), batch["text_input"]))
    assert seen == Counter(map(caption_key, read_all(dataset)))


def test_shuffling_is_seeded_and_changes_with_epoch(caption_shards: sh.ShardsReport) -> None:
    def order(seed: int, epoch: int) -> list[tuple[int, str]]:
        dataset = ShardedCaptionDataset(caption_shards.index_path, TRANSFORM, ShardStreamConfig(shuffle=True, seed=seed))
        dataset.set_epoch(epoch)
        return [caption_key(s) for s in dataset]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and sorted(order(0, 0)) == sorted(order(0, 1))


@pytest.mark.parametrize("num_shards,world", [(3, 2), (7, 3), (1, 2), (10, 1)])
def test_assign_shards_deals_every_shard_once_and_keeps_them_per_rank(num_shards: int, world: int) -> None:
    def dealt(epoch: int) -> list[list[int]]:
        return [assign_shards(num_shards, rank=rank, world_size=world, shuffle=True, seed=1, epoch=epoch)
                for rank in range(world)]

    assert sorted(i for shards in dealt(2) for i in shards) == list(range(num_shards))
    assert [sorted(shards) for shards in dealt(2)] == [sorted(shards) for shards in dealt(3)]


def test_stream_config_is_checked() -> None:
    with pytest.raises(ValueError, match="both"):
        ShardStreamConfig(rank=0)
    with pytest.raises(ValueError, match="rank"):
        ShardStreamConfig(rank=2, world_size=2)


def test_undecodable_shard_image_raises_or_is_skipped(tmp_path: Path) -> None:
    meta = json.dumps({"image": "x.jpg", "records": [{"caption": "c", "sample_image_id": 0}]}).encode()
    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:
        for name, data in [("000000000.jpg", b"not a jpeg"), ("000000000.json", meta)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard = {"name": "shard-000000.tar", "num_images": 1, "num_samples": 1, "num_bytes": 0}
    (tmp_path / sh.INDEX_NAME).write_text(json.dumps(
        {"format": shard_index.INDEX_FORMAT, "version": shard_index.INDEX_VERSION, "kind": "caption_train", "shards": [shard]}))
    with pytest.raises(ImageLoadError, match="000000000.jpg"):
        read_all(ShardedCaptionDataset(tmp_path, TRANSFORM))
    skipped = read_all(ShardedCaptionDataset(tmp_path, TRANSFORM, ShardStreamConfig(skip_bad_images=True)))
    assert len(skipped) == 1 and isinstance(skipped[0], SkippedSample)


def test_webdataset_reads_the_shards(caption_shards: sh.ShardsReport) -> None:
    wds = pytest.importorskip("webdataset")
    index = ShardIndex.load(caption_shards.index_path)
    urls = [str(index.path(i)) for i in range(len(index.shards))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == index.num_images and all({"jpg", "json"} <= set(s) for s in samples)


# ---------------------------------------------------------------------------------- CLI


def test_cli_writes_shards(shapes: ShapesPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    shard_options.add_arguments(parser)
    argv = ["--kind", "vqa_train", "--annotations", str(shapes.vqa_train), "--image-root", str(shapes.root),
            "--output", str(tmp_path), "--samples-per-shard", "4"]
    assert shard_writer.run(parser.parse_args(argv)) == 0
    assert "3 shards, 12 images" in capsys.readouterr().out
    assert shard_writer.run(parser.parse_args(argv)) == 2  # the index exists and --overwrite was not given
    assert "--overwrite" in capsys.readouterr().out
