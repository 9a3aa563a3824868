"""Datasets and load_dataset on real shapes files; bad images; offline and (faked) online standard sets."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mixkit.data import download
from mixkit.data.bad_images import (
    BadImageBudget,
    SkipBadImages,
    SkippedSample,
    TooManyBadImagesError,
    collate_skipping_none,
)
from mixkit.data.columns import StringColumn, StringListColumn
from mixkit.data.datasets import CaptionDataset, CaptionEvalDataset, VqaDataset, VqaEvalDataset
from mixkit.data.download import DatasetNotFoundError, download_file
from mixkit.data.loading import load_dataset
from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
from mixkit.data.sources import SOURCES, get_source
from mixkit.data.validation import AnnotationError

SIZE = 32  # small tensors keep the tests fast; the shapes images are 64 px


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesPaths:
    root = tmp_path_factory.mktemp("shapes")
    return write_shapes_dataset(root, ShapesConfig(num_train=6, num_val=3, num_test=3))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MIXKIT_HOME, downloads not allowed, and any network access an error."""
    monkeypatch.setenv("MIXKIT_HOME", str(tmp_path / "home"))
    for name in ("MIXKIT_ALLOW_DOWNLOAD", "HF_HUB_OFFLINE", "MIXKIT_OFFLINE"):
        monkeypatch.delenv(name, raising=False)

    def no_network(url: str) -> None:
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(download, "_open_url", no_network)
    return tmp_path / "home"


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text())


# ----------------------------------------------------------------------- shapes kinds


def test_caption_train(shapes: ShapesPaths) -> None:
    data = load_dataset("shapes", shapes.root, split="train", image_size=SIZE, prompt="a photo of ")
    records = _records(shapes.caption_train)
    assert isinstance(data, CaptionDataset) and len(data) == len(records) == 30
    sample = data[7]
    assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
    assert sample["text_input"] == "a photo of " + records[7]["caption"].replace(":", "").replace("  ", " ")
    # image_id is an index over distinct images, in order of first appearance (LAVIS).
    assert data.num_images == 6
    assert [data[i]["image_id"] for i in (0, 4, 5, 29)] == [0, 0, 1, 5]


def test_caption_eval(shapes: ShapesPaths) -> None:
    data = load_dataset("shapes", shapes.root, split="test", image_size=SIZE)
    records = _records(shapes.caption_test)
    assert isinstance(data, CaptionEvalDataset) and len(data) == 3
    for index, record in enumerate(records):
        sample = data[index]
        assert sample["image_id"] == record["image_id"]
        assert sample["references"] == record["caption"]
        assert sample["image"].shape == (3, SIZE, SIZE)


def test_vqa_train(shapes: ShapesPaths) -> None:
    data = load_dataset("shapes", shapes.root, split="train", task="vqa", image_size=SIZE)
    records = _records(shapes.vqa_train)
    assert isinstance(data, VqaDataset) and len(data) == len(records)
    for index in range(len(data)):
        sample = data[index]
        assert sample["question_id"] == records[index]["question_id"]
        assert sorted(sample["answers"]) == sorted(set(records[index]["answer"]))
        assert sum(sample["weights"]) == pytest.approx(1.0)


def test_vqa_eval_keeps_official_files(shapes: ShapesPaths) -> None:
    data = load_dataset("shapes", shapes.root, split="val", task="vqa", image_size=SIZE)
    assert isinstance(data, VqaEvalDataset)
    assert data.question_file == shapes.vqa_questions["val"]
    assert data.annotation_file == shapes.vqa_annotations["val"]
    sample = data[0]
    assert set(sample) == {"image", "text_input", "question_id"}
    assert sample["question_id"] == _records(shapes.vqa_val)[0]["question_id"]


def test_shapes_config_generates_once_into_cache(home: Path) -> None:
    config = ShapesConfig(num_train=2, num_val=1, num_test=1)
    data = load_dataset("shapes", shapes_config=config, split="val", image_size=SIZE)
    root = data.image_root
    assert root.is_relative_to(home / "datasets" / "shapes") and (root / ".complete").is_file()
    stamp = (root / "annotations" / "caption_val.json").stat().st_mtime_ns
    again = load_dataset("shapes", shapes_config=config, split="val", image_size=SIZE)
    assert again.image_root == root
    assert (root / "annotations" / "caption_val.json").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- custom


def test_custom_vqa_json_lines(tmp_path: Path, shapes: ShapesPaths) -> None:
    image = _records(shapes.vqa_train)[0]["image"]
    path = tmp_path / "mine.jsonl"
    rows = [{"question_id": 1, "question": "What Color?!", "answer": ["a", "a", "b"], "image": image},
            {"question_id": 2, "question": "Shape?", "answer": ["c"], "image": image}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_dataset("custom_vqa", path, image_root=shapes.root, image_size=SIZE)
    sample = data[0]
    assert sample["text_input"] == "what color?"
    assert sample["answers"] == ["a", "b"] and sample["weights"] == pytest.approx([2 / 3, 1 / 3])


def test_caption_eval_ids_follow_the_lavis_rule(tmp_path: Path) -> None:
    path = tmp_path / "test.json"
    records = [{"caption": ["a"], "image": "val2014/COCO_val2014_000000391895.jpg"},
               {"caption": ["b"], "image": "x.jpg", "image_id": "17"}]
    path.write_text(json.dumps(records))
    data = load_dataset("custom_caption", path, split="test", image_size=SIZE)
    assert data.image_ids.tolist() == [391895, 17]
    path.write_text(json.dumps(records + [{"caption": ["c"], "image": "photos/cat.jpg"}]))
    with pytest.raises(ValueError, match="record 2: no integer image_id, and 'photos/cat.jpg' does not end in"):
        load_dataset("custom_caption", path, split="test", image_size=SIZE)


def test_load_rejects_bad_records_naming_file_record_field(tmp_path: Path) -> None:
    path = tmp_path / "caps.json"
    path.write_text(json.dumps([{"caption": "ok", "image": "a.jpg"}, {"caption": ["list"], "image": "b.jpg"}]))
    with pytest.raises(AnnotationError, match=rf"{path}:record 1: field 'caption': expected a string"):
        load_dataset("custom_caption", path)


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        load_dataset("coco")
    with pytest.raises(KeyError, match="did you mean coco_caption"):
        get_source("coco_captoin")
    with pytest.raises(ValueError, match="coco_caption is a caption dataset, not vqa"):
        load_dataset("coco_caption", task="vqa")


def test_load_dataset_is_exported_lazily() -> None:
    from mixkit.data import load_dataset as exported

    assert exported is load_dataset
    # `import mixkit.data.text` runs mixkit/data/__init__.py: it must not pull in the datasets (or torch).
    code = "import sys, mixkit.data.text; print(sorted(m for m in sys.modules if m.startswith(('mixkit.', 'torch'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['mixkit.data', 'mixkit.data.text']"


# -------------------------------------------------------------------- compact storage


def test_string_columns_round_trip() -> None:
    values = ["", "héllo wörld", "a", "日本語"]
    column = StringColumn(values)
    assert [column[i] for i in range(len(column))] == values
    rows = [["a", "b"], [], ["ç"]]
    lists = StringListColumn(rows)
    assert [lists[i] for i in range(len(lists))] == rows


def test_records_are_held_in_numpy_buffers_not_python_objects(shapes: ShapesPaths) -> None:
    data = load_dataset("shapes", shapes.root, split="train", task="vqa", image_size=SIZE)

    def arrays(obj: object) -> list[object]:
        if isinstance(obj, (StringColumn, StringListColumn)):
            return [a for v in vars(obj).values() for a in arrays(v)]
        return [obj]

    columns = [data.images, data.questions, data.answers, data.question_ids]
    leaves = [leaf for column in columns for leaf in arrays(column)]
    assert all(isinstance(leaf, np.ndarray) for leaf in leaves)
    assert not any(isinstance(v, (list, dict)) for v in vars(data).values())


# ------------------------------------------------------------------------- bad images


@pytest.fixture
def damaged(tmp_path: Path, shapes: ShapesPaths) -> tuple[Path, Path]:
    """A caption file over 3 good images, a corrupt one, a truncated one and a missing one."""
    root = tmp_path / "images"
    root.mkdir()
    good = sorted((shapes.root / "images" / "train").glob("*.jpg"))[:3]
    for source in good:
        (root / source.name).write_bytes(source.read_bytes())
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 10)
    (root / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    names = [p.name for p in good] + ["corrupt.jpg", "truncated.jpg", "missing.jpg"]
    path = tmp_path / "caps.json"
    path.write_text(json.dumps([{"caption": f"c {i}", "image": n} for i, n in enumerate(names)]))
    return path, root


def test_skip_bad_images_in_workers_reports_through_batches(damaged: tuple[Path, Path]) -> None:
    path, root = damaged
    data = load_dataset("custom_caption", path, image_root=root, image_size=SIZE, skip_bad_images=True)
    assert isinstance(data, SkipBadImages)
    assert isinstance(data[3], SkippedSample) and "corrupt.jpg" in data[3].path
    loader = DataLoader(data, batch_size=2, num_workers=2, collate_fn=collate_skipping_none)
    batches = list(loader)
    assert sum(b["num_skipped"] for b in batches) == 3
    assert sum(b["num_seen"] for b in batches) == 6
    skipped = sorted(Path(p).name for b in batches for p in b["skipped_images"])
    assert skipped == ["corrupt.jpg", "missing.jpg", "truncated.jpg"]
    assert batches[0]["image"].shape == (2, 3, SIZE, SIZE)
    assert batches[-1].keys() == {"num_seen", "num_skipped", "skipped_images"}  # both bad


def test_without_skipping_a_bad_image_raises(damaged: tuple[Path, Path]) -> None:
    path, root = damaged
    data = load_dataset("custom_caption", path, image_root=root, image_size=SIZE)
    with pytest.raises(ValueError, match="missing.jpg: file not found"):
        data[5]


def test_collate_drops_plain_none() -> None:
    batch = collate_skipping_none([None, {"x": torch.zeros(2), "n": 1, "s": "a"}, None])
    assert batch["num_skipped"] == 2 and batch["x"].shape == (1, 2)
    assert batch["n"].tolist() == [1] and batch["s"] == ["a"] and batch["skipped_images"] == []


def _bad_batch(seen: int, bad: list[str]) -> dict:
    return {"num_seen": seen, "num_skipped": len(bad), "skipped_images": bad}


def test_bad_image_budget_waits_for_min_seen_then_names_files() -> None:
    budget = BadImageBudget(max_fraction=0.01, min_seen=100, num_listed=3)
    budget.update(_bad_batch(50, ["b0.jpg", "b1.jpg"]))  # 4% but too early to judge
    budget.update(_bad_batch(49, []))
    with pytest.raises(TooManyBadImagesError) as caught:
        budget.update(_bad_batch(10, ["b2.jpg", "b3.jpg"]))
    message = str(caught.value)
    assert "4 of 109 images" in message
    assert "b1.jpg, b2.jpg, b3.jpg" in message and "b0.jpg" not in message


def test_bad_image_budget_under_the_limit_passes() -> None:
    budget = BadImageBudget(max_fraction=0.01, min_seen=100)
    for _ in range(10):
        budget.update(_bad_batch(100, []))
    budget.update(_bad_batch(100, ["one.jpg"]))
    assert budget.fraction == pytest.approx(1 / 1100)
    with pytest.raises(ValueError):
        BadImageBudget(max_fraction=2.0)


# --------------------------------------------------------------------- standard sets


def test_offline_missing_standard_set_says_what_to_fetch_and_where(home: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("coco_caption", split="val")
    message = str(caught.value)
    folder = home / "datasets" / "coco_caption"
    assert "https://storage.googleapis.com/sfr-vision-language-research/datasets/coco_karpathy_val.json" in message
    assert f"save as {folder / 'annotations' / 'coco_karpathy_val.json'}" in message
    assert "http://images.cocodataset.org/zips/val2014.zip" in message
    assert f"unzip into {folder / 'images'}" in message
    assert "train2014.zip" not in message  # Karpathy val images are all in val2014
    assert "MIXKIT_ALLOW_DOWNLOAD=1" in message


def test_coco_vqa_val_lists_the_official_scoring_files(home: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("coco_vqa", split="val")
    for name in ("vqa_val_eval.json", "answer_list.json", "v2_OpenEnded_mscoco_val2014_questions.json",
                 "v2_mscoco_val2014_annotations.json"):
        assert name in str(caught.value)


def test_catalogue_targets_are_consistent() -> None:
    for source in SOURCES.values():
        assert set(source.images) == set(source.annotations)
        for split in source.splits:
            assert source.record_files(split), (source.name, split)
            for file in source.annotations[split] + source.images[split]:
                assert file.url.startswith("http") and (file.md5 is None or len(file.md5) == 32)
                assert file.target.startswith("images/" if file.archive else "annotations/")


class _FakeServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, []

    def __call__(self, url: str) -> io.BytesIO:
        self.requests.append(url)
        return io.BytesIO(self.files[url])


def _zip_with(folder: str, image: Image.Image) -> bytes:
    buffer, jpeg = io.BytesIO(), io.BytesIO()
    image.save(jpeg, format="JPEG")
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{folder}/1.jpg", jpeg.getvalue())
    return buffer.getvalue()


def test_allowed_download_fetches_verifies_and_extracts(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = get_source("vg_caption")
    annotation, first_zip, second_zip = source.annotations["train"] + source.images["train"]
    records = [{"caption": "A red square.", "image": "VG_100K/1.jpg", "image_id": 1},
               {"caption": "a blue circle", "image": "VG_100K_2/1.jpg", "image_id": 2}]
    server = _FakeServer({
        annotation.url: json.dumps(records).encode(),
        first_zip.url: _zip_with("VG_100K", Image.new("RGB", (40, 40), (200, 0, 0))),
        second_zip.url: _zip_with("VG_100K_2", Image.new("RGB", (40, 40), (0, 0, 200))),
    })
    monkeypatch.setattr(download, "_open_url", server)
    monkeypatch.setenv("MIXKIT_ALLOW_DOWNLOAD", "1")
    data = load_dataset("vg_caption", image_size=SIZE)
    assert len(server.requests) == 3 and len(data) == 2
    assert data[0]["text_input"] == "a red square"
    folder = home / "datasets" / "vg_caption"
    assert not list(folder.rglob("*.part")) and not list((folder / "downloads").iterdir())
    load_dataset("vg_caption", image_size=SIZE)  # everything on disk now: no new request
    assert len(server.requests) == 3


def test_download_file_checks_md5_and_leaves_nothing_behind(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    payload = b"annotation bytes"
    monkeypatch.setattr(download, "_open_url", _FakeServer({"https://x/a.json": payload}))
    dest = tmp_path / "out" / "a.json"
    with pytest.raises(OSError, match="md5 mismatch"):
        download_file("https://x/a.json", dest, md5="0" * 32, progress=False)
    assert not dest.exists() and not dest.with_name("a.json.part").exists()
    download_file("https://x/a.json", dest, md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload


def test_data_files_override_skips_the_catalogue(home: Path, shapes: ShapesPaths) -> None:
    data = load_dataset("coco_caption", shapes.caption_val, split="val", image_root=shapes.root,
                        image_size=SIZE)
    assert len(data) == 3 and data[0]["references"]
    loader = DataLoader(data, batch_size=3, collate_fn=collate_skipping_none)
    assert next(iter(loader))["image_id"].tolist() == [r["image_id"] for r in _records(shapes.caption_val)]


def test_seeded_augmentation_depends_on_sample_and_epoch_only(shapes: ShapesPaths) -> None:
    def dataset():
        loaded = load_dataset("custom_caption", shapes.caption_train, image_root=shapes.root, image_size=32)
        loaded.seed_augmentation(7)
        return loaded

    first, second = dataset(), dataset()
    torch.manual_seed(0)
    a = first[3]["image"]
    torch.manual_seed(123)  # the global RNG (other processes, workers, a resume) plays no part
    _ = second[0]
    b = second[3]["image"]
    assert torch.equal(a, b)
    second.set_epoch(1)
    assert not torch.equal(second[3]["image"], a), "a new epoch draws new crops"
    unseeded = load_dataset("custom_caption", shapes.caption_train, image_root=shapes.root, image_size=32)
    torch.manual_seed(0)
    c = unseeded[3]["image"]
    torch.manual_seed(1)
    assert not torch.equal(unseeded[3]["image"], c), "without a seed the global RNG decides"
