"""`mixkit train blip-pretrain | blip-caption | blip-vqa` on the shapes data: each run lowers its loss, writes a
folder `load_pipeline` reads back, and the trained model beats the untrained one on what its stage teaches
(ITC retrieval and ITM on the pairs it saw; CIDEr and VQA accuracy on held-out images). Plus: a frozen ViT stays
unchanged, a checkpoint without the stage's heads is a usage error, and the shipped recipes carry LAVIS's settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mixkit import load_pipeline
from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.eval.vqa_score import question_accuracy
from mixkit.testing import build_tiny_blip
from mixkit.train.train_cli import parse

CONFIGS = Path(__file__).parents[2] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """8 train and 8 test shapes images at 32 px, and a tiny random BLIP (every head) whose tokenizer knows the
    captions, questions and answers."""
    shapes, model = tmp_path_factory.mktemp("shapes"), tmp_path_factory.mktemp("tiny-blip")
    write_shapes_dataset(shapes, ShapesConfig(num_train=8, num_val=0, num_test=8, image_size=32))
    captions = json.loads((shapes / "annotations/caption_train.json").read_text())
    questions = json.loads((shapes / "annotations/vqa_train.json").read_text())
    texts = ([record["caption"] for record in captions] + [record["question"] for record in questions]
             + [answer for record in questions for answer in record["answer"]] + ["a picture of"])
    build_tiny_blip(model, "BlipForPreTraining", texts, weight_std=0.15)
    first = {}
    for record in captions:  # one caption per image: 8 pairs for the contrastive run
        first.setdefault(record["image"], record)
    (shapes / "annotations/caption_pairs.json").write_text(json.dumps(list(first.values())))
    return model, shapes


def train(stage: str, model: Path, shapes: Path, output: Path, steps: int, *extra: str) -> list[float]:
    """Run `mixkit train STAGE` on CPU; return the logged losses."""
    if stage == "blip-vqa":
        data = ["--dataset_name", "shapes", "--data_files", str(shapes)]
    else:
        records = "caption_pairs.json" if stage == "blip-pretrain" else "caption_train.json"
        data = ["--dataset_name", "custom_caption", "--data_files", str(shapes / "annotations" / records),
                "--image_root", str(shapes)]
    args = ["train", stage, "--model_name_or_path", str(model), *data, "--image_size", "32",
            "--max_text_length", "30", "--freeze_vit", "false", "--output_dir", str(output),
            "--per_device_train_batch_size", "8", "--max_steps", str(steps), "--warmup_steps", "2",
            "--learning_rate", "3e-3", "--eta_min", "0", "--weight_decay", "0.05", "--logging_steps", "1",
            "--save_strategy", "steps", "--save_steps", str(steps), "--report_to", "none", "--disable_tqdm", "true",
            "--seed", "0", "--use_cpu", "true", *extra]
    assert main(args) == 0
    state = json.loads((output / f"checkpoint-{steps}/trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == steps and all(math.isfinite(loss) for loss in losses)
    return losses


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def pair_scores(pipeline, shapes: Path) -> tuple[float, float]:
    """(ITC image->text R@1, mean ITM probability of true pairs minus mismatched ones) on the 8 training pairs."""
    pairs = json.loads((shapes / "annotations/caption_pairs.json").read_text())
    images, captions = [shapes / pair["image"] for pair in pairs], [pair["caption"] for pair in pairs]
    tokens = pipeline.tokenize(captions)
    similarity = pipeline.itc_similarity(pipeline.image_features(images).image_feats,
                                         pipeline.text_features(tokens.input_ids, tokens.attention_mask))
    recall = (similarity.argmax(dim=1) == torch.arange(len(pairs))).float().mean().item()
    matched = mean(pipeline.match(images, captions)["itm"])
    mismatched = mean(pipeline.match(images, captions[1:] + captions[:1])["itm"])
    return recall, matched - mismatched


def test_blip_pretrain_learns_to_match_and_writes_a_loadable_folder(setup, tmp_path: Path) -> None:
    model, shapes = setup
    losses = train("blip-pretrain", model, shapes, tmp_path / "out", 50, "--queue_size", "16", "--momentum", "0.9")
    assert mean(losses[-5:]) < 0.7 * mean(losses[:5]), losses
    weights = load_file(str(tmp_path / "out/model.safetensors"))
    assert not any(key.endswith("_m") or "_m." in key or "queue" in key for key in weights)  # training state only
    trained, untrained = load_pipeline(tmp_path / "out", device="cpu"), load_pipeline(model, device="cpu")
    assert trained.model.architecture == "BlipForPreTraining"
    assert 0.001 <= trained.model.temp.item() <= 0.5
    recall, separation = pair_scores(trained, shapes)
    base_recall, base_separation = pair_scores(untrained, shapes)
    assert recall > base_recall and recall >= 0.25, (recall, base_recall)
    assert separation > 0.1 and abs(base_separation) < 0.05, (separation, base_separation)


def cider(pipeline, shapes: Path) -> float:
    from pycocoevalcap.cider.cider import Cider

    records = json.loads((shapes / "annotations/caption_test.json").read_text())
    captions = pipeline.caption([shapes / record["image"] for record in records])
    references = {index: record["caption"] for index, record in enumerate(records)}
    return float(Cider().compute_score(references, {index: [text] for index, text in enumerate(captions)})[0])


def test_blip_caption_beats_the_untrained_model_on_held_out_images(setup, tmp_path: Path) -> None:
    model, shapes = setup
    losses = train("blip-caption", model, shapes, tmp_path / "out", 60, "--prompt", "a picture of ")
    assert mean(losses[-5:]) < 0.6 * mean(losses[:5]), losses
    trained = load_pipeline(tmp_path / "out", device="cpu")
    assert trained.model.architecture == "BlipForConditionalGeneration"
    assert trained.settings.prompt == "a picture of " and trained.settings.caption.max_new_tokens == 16
    score, base = cider(trained, shapes), cider(load_pipeline(model, device="cpu"), shapes)
    assert score > 2 * base and score > base + 0.05, (score, base)


def vqa_accuracy(pipeline, shapes: Path) -> float:
    records = json.loads((shapes / "annotations/vqa_test.json").read_text())
    answers = pipeline.answer([shapes / record["image"] for record in records],
                              [record["question"] for record in records])
    return mean(question_accuracy(answer, record["answer"]) for answer, record in zip(answers, records))


def test_blip_vqa_beats_the_untrained_model_on_held_out_questions(setup, tmp_path: Path) -> None:
    model, shapes = setup
    losses = train("blip-vqa", model, shapes, tmp_path / "out", 60)
    assert mean(losses[-5:]) < 0.6 * mean(losses[:5]), losses
    trained = load_pipeline(tmp_path / "out", device="cpu")
    assert trained.model.architecture == "BlipForQuestionAnswering"
    accuracy, base = vqa_accuracy(trained, shapes), vqa_accuracy(load_pipeline(model, device="cpu"), shapes)
    assert accuracy > base + 0.08, (accuracy, base)


def test_freeze_vit_leaves_the_vision_tower_unchanged(setup, tmp_path: Path) -> None:
    model, shapes = setup
    train("blip-vqa", model, shapes, tmp_path / "out", 2, "--freeze_vit", "true")
    before, after = load_file(str(model / "model.safetensors")), load_file(str(tmp_path / "out/model.safetensors"))
    vision = [key for key in after if key.startswith("vision_model.")]
    assert vision and all(torch.equal(before[key], after[key]) for key in vision)
    assert not torch.equal(before["text_encoder.embeddings.word_embeddings.weight"],
                           after["text_encoder.embeddings.word_embeddings.weight"])


def test_a_checkpoint_without_the_stage_heads_is_a_usage_error(setup, tmp_path: Path, capsys) -> None:
    _, shapes = setup
    caption_only = tmp_path / "caption-only"
    build_tiny_blip(caption_only, "BlipForConditionalGeneration", ["what color is it", "red"])
    args = ["train", "blip-vqa", "--model_name_or_path", str(caption_only), "--dataset_name", "shapes",
            "--data_files", str(shapes), "--image_size", "32", "--output_dir", str(tmp_path / "out"),
            "--use_cpu", "true", "--report_to", "none"]
    assert main(args) == 2
    assert "BlipForConditionalGeneration checkpoint lacks parts of BlipForQuestionAnswering" in capsys.readouterr().err


@pytest.mark.parametrize(("recipe", "expected"), [
    # (batch, lr, eta_min, warm-up, epochs, image size, text length): LAVIS 506965b lavis/projects/blip/train/*.yaml
    ("blip_pretrain.yaml", (75, 3e-4, 1e-6, 3000, 20, 224, 30)),
    ("blip_caption_coco.yaml", (32, 1e-5, 0.0, 0, 5, 384, 40)),
    ("blip_vqa_vqav2.yaml", (16, 2e-5, 0.0, 0, 10, 480, 35)),
])
def test_blip_recipes_carry_lavis_settings(recipe: str, expected: tuple, tmp_path: Path) -> None:
    from mixkit.train.train_cli import recipe_stage

    stage = recipe_stage(CONFIGS / recipe)
    model, data, args = parse(stage, str(CONFIGS / recipe), ["--output_dir", str(tmp_path)])
    assert (args.per_device_train_batch_size, args.learning_rate, args.eta_min, args.warmup_steps,
            args.num_train_epochs, data.image_size, data.max_text_length) == expected
    assert args.weight_decay == 0.05 and args.seed == 42 and not model.freeze_vit
    if stage == "blip-pretrain":
        assert (model.queue_size, model.alpha, model.momentum, args.lr_decay_rate) == (57600, 0.4, 0.995, 0.9)
        assert args.dataloader_drop_last
    else:
        assert args.lr_decay_rate == 0.0  # cosine
    assert data.prompt == ("a picture of " if stage == "blip-caption" else "")
