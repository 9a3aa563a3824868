"""`mixkit train instructblip` on the shapes data: the loss falls, the model beats a no-image baseline, only the
Q-Former, queries, ln_vision and projection change, and the result loads as a chat pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mixkit.cli import main
from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
from mixkit.data.shapes.baselines import most_frequent
from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig, load_image
from mixkit.models.instructblip.modeling import InstructBlipModel
from mixkit.pipelines.auto import load_pipeline
from mixkit.testing import save_transformers_instructblip, teach_language
from mixkit.train.collators import to_batch
from mixkit.train.instructblip_stage import (InstructBlipBatch, InstructBlipCollator, InstructBlipTask,
                                             _qformer_tokenizer, read_instruction_records)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(shapes root, instruction records file, a tiny transformers-saved OPT InstructBLIP)."""
    root = tmp_path_factory.mktemp("instructblip-train")
    shapes = root / "shapes"
    write_shapes_dataset(shapes, ShapesConfig(num_train=8, num_val=1, num_test=1, image_size=32))
    captions = json.loads((shapes / "annotations/caption_train.json").read_text())
    questions = json.loads((shapes / "annotations/vqa_train.json").read_text())
    records = [{"image": r["image"], "instruction": "A short image caption.", "answer": r["caption"]}
               for r in captions]
    records += [{"image": r["image"], "instruction": f"Question: {r['question']} Short Answer:",
                 "answer": most_frequent(r["answer"])} for r in questions]
    records_file = root / "instructions.json"
    records_file.write_text(json.dumps(records))
    texts = sorted({text for r in records for text in (r["instruction"], r["answer"])})
    model, processor = save_transformers_instructblip(root / "start", "opt", texts=texts, weight_std=0.05)
    # A frozen LLM that knows the shapes language (text only, no image), as InstructBLIP's frozen Vicuna / Flan-T5
    # knows English: instruction tuning then has to bring in what only the image tells.
    sentences = [r["instruction"] + " " + r["answer"] + processor.tokenizer.eos_token for r in records]
    teach_language(model.language_model, processor.tokenizer, sentences, steps=100)
    model.save_pretrained(root / "start")
    return shapes, records_file, root / "start"


def mean_loss(model: InstructBlipModel, folder: Path, shapes: Path, records: list[dict], shuffle: bool = False) -> float:
    """The task's loss over every record, eval-mode images (no augmentation); `shuffle` pairs each instruction
    with another record's image: the baseline that knows the instructions but not the images."""
    transform = EvalImageTransform(ImageProcessorConfig(image_size=32))
    images = [transform(load_image(shapes / r["image"])) for r in records]
    if shuffle:
        images = images[1:] + images[:1]
    from transformers import AutoTokenizer

    collator = InstructBlipCollator(AutoTokenizer.from_pretrained(folder), _qformer_tokenizer(folder), False)
    samples = [{"image": image, "text_input": r["instruction"], "text_output": r["answer"]}
               for image, r in zip(images, records)]
    with torch.no_grad():
        return InstructBlipTask().compute(model.eval(), to_batch(InstructBlipBatch, collator(samples))).loss.item()


def test_instruction_tuning_learns_on_shapes(setup, tmp_path: Path) -> None:
    shapes, records_file, start = setup
    records = read_instruction_records(records_file)
    before = InstructBlipModel.from_pretrained(start)
    args = ["train", "instructblip", "--model_name_or_path", str(start), "--data_files", str(records_file),
            "--image_root", str(shapes), "--image_size", "32", "--output_dir", str(tmp_path / "out"),
            "--per_device_train_batch_size", "16", "--max_steps", "60", "--warmup_steps", "2", "--learning_rate",
            "5e-3", "--eta_min", "5e-4", "--logging_steps", "20", "--save_strategy", "no", "--report_to", "none",
            "--disable_tqdm", "true", "--seed", "0", "--language_model_dropout", "false"]
    assert main(args) == 0
    after = InstructBlipModel.from_pretrained(tmp_path / "out")  # trainable-only weights on the base folder
    initial, trained = mean_loss(before, start, shapes, records), mean_loss(after, start, shapes, records)
    baseline = mean_loss(after, start, shapes, records, shuffle=True)
    assert trained < 0.85 * initial, (initial, trained)
    assert trained < baseline, ("the trained model must use the image: mismatched images should do worse",
                                trained, baseline)
    trained_prefixes = ("qformer.", "query_tokens", "language_projection.", "vision_model.post_layernorm.")
    after_state = after.state_dict()
    for name, value in before.state_dict().items():
        if name.startswith(("language_model.", "vision_model.encoder.", "vision_model.embeddings.")):
            assert torch.equal(value, after_state[name]), name
    assert not torch.equal(before.qformer.embeddings.word_embeddings.weight,
                           after.qformer.embeddings.word_embeddings.weight), "the instruction input is trained"
    with safe_open(str(tmp_path / "out/model.safetensors"), framework="pt") as saved:  # trainable-only checkpoint
        assert saved.keys() and all(name.startswith(trained_prefixes) for name in saved.keys())
    pipeline = load_pipeline(str(tmp_path / "out"), task="chat")
    assert pipeline.family == "instructblip" and pipeline.chat_settings.num_beams == 5  # LAVIS defaults saved


def test_bad_records_are_rejected_before_training(setup, tmp_path: Path, capsys) -> None:
    shapes, _, start = setup
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "x.png", "instruction": "describe"}]))
    args = ["train", "instructblip", "--model_name_or_path", str(start), "--data_files", str(bad),
            "--image_root", str(shapes), "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    assert main(args) == 2
    assert "record 0: missing or empty answer" in capsys.readouterr().err
