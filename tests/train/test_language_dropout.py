"""The frozen language model trains as LAVIS trains it: its dropout active during stage 2 and caption
fine-tuning (LAVIS only sets `requires_grad=False` on it), off with `--language_model_dropout false`, and never
on in evaluation or prediction. The frozen ViT stays in eval mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.data.tokenizers import train_opt_tokenizer
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.pipelines.blip2 import Blip2Pipeline
from mixkit.testing import DEFAULT_TEXTS, build_tiny_predictor, randomize_, update_config
from mixkit.train import stage2_task
from mixkit.train.collators import Stage2Collator, to_batch
from mixkit.train.stage2_task import Stage2Batch, Stage2Task
from mixkit.train.train_cli import main as train_main


def dropout_modes(module: nn.Module) -> set[bool]:
    """The train/eval flags of a module and all its parts (`transformers`' OPT applies functional dropout
    gated by each layer's `training` flag, not `nn.Dropout` modules)."""
    return {m.training for m in module.modules()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, ShapesConfig(num_train=8, num_val=1, num_test=1, image_size=32))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny OPT BLIP-2 whose language model has dropout 0.1, as the real OPT and Flan-T5 configs do."""
    directory = tmp_path_factory.mktemp("opt")
    build_tiny_predictor(directory, "opt")
    update_config(directory, "text_config", dropout=0.1)
    return directory


@pytest.fixture
def seen(monkeypatch) -> list[dict]:
    """What every training step's model looked like, recorded inside the stage-2 task."""
    records: list[dict] = []
    compute = Stage2Task.compute

    def recording(self, model, batch, **kwargs):
        records.append({
            "lm_dropout": dropout_modes(model.language_model),
            "lm_grad": any(p.requires_grad for p in model.language_model.parameters()),
            "vit_training": model.vision_model.encoder.training,
        })
        return compute(self, model, batch, **kwargs)

    monkeypatch.setattr(stage2_task.Stage2Task, "compute", recording)
    return records


def run_training(stage: str, checkpoint: Path, shapes: Path, output: Path, *extra: str) -> None:
    argv = [stage, "--model_name_or_path", str(checkpoint), "--dataset_name", "custom_caption",
            "--data_files", str(shapes / "annotations/caption_train.json"), "--image_root", str(shapes),
            "--image_size", "32", "--output_dir", str(output), "--per_device_train_batch_size", "4",
            "--max_steps", "2", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", *extra]
    assert train_main(argv) == 0


@pytest.mark.parametrize("stage", ["blip2-stage2", "blip2-caption"])
def test_the_frozen_lm_keeps_its_dropout_in_training_by_default(stage, checkpoint, shapes, tmp_path, seen):
    extra = ["--freeze_vit", "false"] if stage == "blip2-caption" else []
    run_training(stage, checkpoint, shapes, tmp_path / "out", *extra)
    assert seen and all(step["lm_dropout"] == {True} and not step["lm_grad"] for step in seen)
    if stage == "blip2-stage2":
        assert not any(step["vit_training"] for step in seen)  # the frozen ViT never runs dropout


def test_the_option_keeps_the_frozen_lm_in_eval_mode(checkpoint, shapes, tmp_path, seen):
    run_training("blip2-stage2", checkpoint, shapes, tmp_path / "out", "--language_model_dropout", "false")
    assert seen and all(step["lm_dropout"] == {False} for step in seen)


def test_prediction_never_uses_dropout(checkpoint):
    pipeline = Blip2Pipeline.from_pretrained(str(checkpoint))
    assert dropout_modes(pipeline.model) == {False}


def test_lm_dropout_changes_the_loss_and_the_option_makes_it_deterministic(tmp_path):
    tokenizer = train_opt_tokenizer(DEFAULT_TEXTS, tmp_path / "tok", vocab_size=300)
    config = tiny_blip2_config("opt", vocab_size=len(tokenizer))
    config.text_config.dropout = 0.3
    config.qformer_config.hidden_dropout_prob = config.qformer_config.attention_probs_dropout_prob = 0.0
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    samples = [{"image": image, "text_input": text} for image, text in zip(pixels, DEFAULT_TEXTS[:4])]
    batch = to_batch(Stage2Batch, Stage2Collator(tokenizer, encoder_decoder=False)(samples))

    def losses(keep_dropout: bool) -> list[float]:
        torch.manual_seed(0)
        model = randomize_(Blip2Model(config), seed=0, std=0.15)
        model.lock_frozen_parts(keep_language_dropout=keep_dropout)
        model.train()
        values = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            values.append(Stage2Task().compute(model, batch).loss.item())
        return values

    with_dropout, without = losses(True), losses(False)
    assert abs(with_dropout[0] - with_dropout[1]) > 1e-4
    assert without[0] == without[1]
