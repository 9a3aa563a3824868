"""Each MiniGPT recipe (minigpt4-stage1, minigpt4-stage2, minigptv2) beats an image-blind baseline: after training,
the model's loss on its training records with the right images is lower than with the images shuffled across the
records (each record paired with another record's image, a fixed derangement). The frozen LLM was first taught the
records' text, so whatever the trained model gains over the shuffled pairing comes from the image content carried
by `llama_proj` (and, for MiniGPT-v2, the LoRA weights reading it), not from the language prior or from the mere
presence of image tokens. The builders and the recipe arguments are those of test_minigpt4_training.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mixkit.cli import main
from mixkit.models.minigpt4.boxes import format_box
from mixkit.train.arguments import ModelArguments
from mixkit.train.minigpt4_stage import MiniGPT4Batch, MiniGPT4Task
from mixkit.train.stages import build_stage
from mixkit.testing import build_tiny_minigpt4
from tests.train.test_minigpt4_training import (captions, caption_data, data_arguments, pretrain_language_model,
                                                shapes, train_args)

__all__ = ["shapes"]  # the module fixture, shared with test_minigpt4_training.py


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def image_keys(dataset) -> list:
    """Which image each record shows: RefCOCO records share images (several expressions per image); the caption
    records here have one caption per image."""
    records = getattr(dataset, "records", None)
    return [record["img_id"] for record in records] if records is not None else list(range(len(dataset)))


def other_image_donors(keys: list) -> list[int]:
    """For each record, a record showing the next distinct image (cyclically): never its own image."""
    distinct = list(dict.fromkeys(keys))
    first = {key: keys.index(key) for key in distinct}
    return [first[distinct[(distinct.index(key) + 1) % len(distinct)]] for key in keys]


def records_losses(model_dir: Path, stage: str, data: list[str], shapes: Path) -> tuple[float, float]:
    """The task's loss of `model_dir` on all its training records (eval mode, one seeded draw of the training
    augmentation), with the right images and with every record given another image's pixels."""
    arguments = data_arguments([*data, "--image_root", str(shapes)])
    parts = build_stage(stage, ModelArguments(model_name_or_path=str(model_dir)), arguments)
    torch.manual_seed(0)
    collated = parts.collator([parts.dataset[index] for index in range(len(parts.dataset))])
    donors = other_image_donors(image_keys(parts.dataset))
    shuffled = {**collated, "pixel_values": collated["pixel_values"][donors]}
    model, task = parts.model.eval(), MiniGPT4Task()
    with torch.no_grad():
        return tuple(task.compute(model, MiniGPT4Batch(**{key: values[key] for key in MiniGPT4Batch.__dataclass_fields__
                                                           })).loss.item() for values in (collated, shuffled))


def train_and_compare(stage: str, start: Path, output: Path, shapes: Path, data: list[str]) -> tuple[float, float]:
    import os
    extra = ["--num_train_epochs", os.environ.get("NEP", "8")]
    assert main(["train", stage, *train_args(start, shapes, output, data), *extra]) == 0
    right, shuffled = records_losses(output, stage, data, shapes)
    print(f"{stage}: loss with the right images {right:.4f}, with shuffled images {shuffled:.4f}")
    return right, shuffled


@pytest.mark.parametrize("stage, variant", [("minigpt4-stage1", "vicuna0"), ("minigpt4-stage2", "llama2")])
def test_minigpt4_stages_beat_shuffled_images(shapes: Path, tmp_path: Path, stage: str, variant: str) -> None:
    texts = captions(shapes)
    assert len(set(texts)) > 1, "the shuffled pairing must change some captions' images"
    import os
    build_tiny_minigpt4(tmp_path / "start", variant, texts, weight_std=float(os.environ.get("WSTD", "0.05")))
    pretrain_language_model(tmp_path / "start", texts, "\n" if stage.endswith("1") else "")
    right, shuffled = train_and_compare(stage, tmp_path / "start", tmp_path / "out", shapes, caption_data(shapes))
    assert right < shuffled, (right, shuffled)


def test_minigptv2_beats_shuffled_images(shapes: Path, tmp_path: Path) -> None:
    records = json.loads((shapes / "annotations/refcoco_train.json").read_text())
    expressions = [record["sents"] for record in records]
    import os
    build_tiny_minigpt4(tmp_path / "start", "minigptv2", expressions, weight_std=float(os.environ.get("WSTD", "0.05")))
    boxes = [format_box((x, y, x + w, y + h), r["width"], r["height"]) for r in records for x, y, w, h in [r["bbox"]]]
    pretrain_language_model(tmp_path / "start", expressions + boxes if os.environ.get("BOX") else expressions, "")
    data = ["--data_files", str(shapes / "annotations/refcoco_train.json")]
    right, shuffled = train_and_compare("minigptv2", tmp_path / "start", tmp_path / "out", shapes, data)
    assert right < shuffled, (right, shuffled)
