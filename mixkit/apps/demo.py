"""`mixkit demo`: the whole BLIP-2 workflow of the article, on a CPU, in a few minutes.

    shapes data -> tokenizers -> "pretrained" frozen ViT and Flan-T5-style LM -> stage 1 (Q-Former:
    ITC + ITM + ITG, ViT frozen) -> stage 2 (Q-Former + projection; ViT and LM frozen; captions and
    VQA pairs) -> held-out evaluation with the official scorers and both baselines -> predictions on
    a few images -> DIR/metrics.json and DIR/report.html.

BLIP-2 assumes its image encoder and language model are already pretrained. Real ones are gigabytes,
so the demo makes tiny ones first, cheaply: the ViT learns every shape's colour, kind and size per
grid cell plus the background (supervised); the T5 learns to answer questions and write captions from
a text description of the scene. Stage 2 then only has to teach the Q-Former to stand in for that
description: the same job the real Q-Former does for a real LLM.

Every stage runs through `Blip2Trainer` with a task object (the pretraining tasks are defined here);
images are decoded once and kept in memory, since a 48-px image costs more to decode than to encode.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm
from transformers import AutoModelForSeq2SeqLM, Blip2Config, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from mixkit import library_versions
from mixkit.data.shapes import (
    BACKGROUND_COLOURS, COUNT_WORDS, KINDS, POSITIONS, SHAPE_COLOURS, SIZES, Scene, ShapesConfig, ShapesPaths,
    make_example, most_frequent_answer_by_question_type, most_frequent_caption, question_type_of,
    write_shapes_dataset,
)
from mixkit.data.text import clean_caption, clean_question
from mixkit.data.tokenizers import train_bert_tokenizer, word_level_t5_tokenizer
from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig, load_image
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.blip2.tiny import tiny_qformer_config, tiny_t5_config, tiny_vision_config
from mixkit.models.blip2.vision import VisionTransformer
from mixkit.models.catalogue import CAPTION_PROMPT, VQA_PROMPT
from mixkit.train.collators import Stage1Collator, Stage2Collator
from mixkit.train.stage1_task import Stage1Batch, Stage1Task
from mixkit.train.stage2_task import Stage2Batch, Stage2Task, shift_right

logger = logging.getLogger(__name__)
STAGES = ("vision", "language", "stage1", "stage2")


# ------------------------------------------------------------------------- settings


@dataclass
class DemoConfig:
    """Sizes and step counts; the defaults fit the 5-minute budget on 2 CPU cores."""

    seed: int = 0
    num_train: int = 3000
    num_test: int = 200
    image_size: int = 48  # 3x3 grid of 16-px cells = 2x2 patches of 8 px each
    hidden_size: int = 64  # ViT, Q-Former and T5 widths
    vision_layers: int = 3
    qformer_layers: int = 2
    language_layers: int = 2
    num_query_tokens: int = 8
    vocab_size: int = 400
    batch_size: int = 64
    steps: dict[str, int] = field(
        default_factory=lambda: {"vision": 250, "language": 900, "stage1": 100, "stage2": 900})
    learning_rates: dict[str, float] = field(
        default_factory=lambda: {"vision": 2e-3, "language": 2e-3, "stage1": 1e-3, "stage2": 2e-3})
    num_beams: int = 3
    num_examples: int = 6
    # One thread: on 2 cores it was only ~10% slower than two when the machine was idle, and two threads
    # slowed 5-25x whenever another process was busy (OpenMP workers waiting on each other).
    threads: int = 1

    def __post_init__(self) -> None:
        if set(self.steps) != set(STAGES) or set(self.learning_rates) != set(STAGES):
            raise ValueError(f"steps and learning_rates need exactly the stages {STAGES}")
        if min(self.num_train, self.num_test, self.batch_size, self.num_examples, *self.steps.values()) < 1:
            raise ValueError(f"sizes and step counts must be >= 1: {self}")
        if self.num_examples > self.num_test:
            raise ValueError(f"num_examples ({self.num_examples}) > num_test ({self.num_test})")

    @classmethod
    def tiny(cls) -> DemoConfig:
        """Seconds instead of minutes, for tests: same pipeline, every number small."""
        return cls(num_train=48, num_test=8, hidden_size=32, vision_layers=1, qformer_layers=2,
                   language_layers=1, num_query_tokens=4, vocab_size=200, batch_size=8,
                   steps={stage: 3 for stage in STAGES}, num_beams=1, num_examples=2)


def shapes_config(config: DemoConfig) -> ShapesConfig:
    return ShapesConfig(num_train=config.num_train, num_val=0, num_test=config.num_test,
                        image_size=config.image_size, seed=config.seed)


def blip2_config(config: DemoConfig, vocab_size: int, qformer_vocab_size: int, stage1: bool) -> Blip2Config:
    """The tiny BLIP-2-FlanT5 of the demo; `stage1` adds the Q-Former's text blocks."""
    width = config.hidden_size
    return Blip2Config(
        vision_config=tiny_vision_config(config.image_size, width, config.vision_layers).to_dict(),
        qformer_config=tiny_qformer_config(qformer_vocab_size, width, config.qformer_layers,
                                           text_input=stage1).to_dict(),
        text_config=tiny_t5_config(vocab_size, width, config.language_layers).to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_text_hidden_size=32,
    )


# ------------------------------------------------------------------------- progress


class Progress:
    """Numbered step lines with elapsed time, on stderr."""

    def __init__(self, total_steps: int):
        self.start = time.perf_counter()
        self.total = total_steps
        self.done = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, what: str) -> None:
        self.done += 1
        print(f"[demo {self.elapsed():6.1f}s] {self.done}/{self.total} {what}", file=sys.stderr, flush=True)

    def note(self, what: str) -> None:
        print(f"[demo {self.elapsed():6.1f}s]     {what}", file=sys.stderr, flush=True)


class LossBar(TrainerCallback):
    """One tqdm bar per training run on stderr, its postfix the last logged loss (the Trainer's own bar
    prints every log dict to stdout)."""

    def __init__(self, name: str):
        self.name = name
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=f"  {self.name}", unit="step", file=sys.stderr, leave=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


# ------------------------------------------------------------------------- data


def write_data(config: DemoConfig, root: Path) -> ShapesPaths:
    return write_shapes_dataset(root, shapes_config(config), progress=True)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_images(root: Path, relpaths: Sequence[str], image_size: int) -> torch.Tensor:
    """Every image decoded and normalised once: [N, 3, S, S]."""
    transform = EvalImageTransform(ImageProcessorConfig(image_size=image_size))
    return torch.stack([transform(load_image(root / path)) for path in relpaths])


class ImageTextSamples(Dataset):
    """Samples over an in-memory image tensor: {"image": tensor, "image_index": int, **text fields}."""

    def __init__(self, images: torch.Tensor, rows: Sequence[dict[str, Any]]):
        self.images, self.rows = images, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {"image": self.images[row["image_index"]], **row}


@dataclass
class TrainData:
    """The training split, in memory: images, scenes (the ViT's labels) and the text of every sample."""

    images: torch.Tensor
    scenes: list[Scene]
    captions: list[dict[str, Any]]  # {"image_index", "caption"}
    questions: list[dict[str, Any]]  # {"image_index", "question", "answer"} (majority answer)


def majority(answers: Sequence[str]) -> str:
    return max(sorted(set(answers)), key=answers.count)


def load_train_data(paths: ShapesPaths, config: DemoConfig) -> TrainData:
    caption_records, vqa_records = read_json(paths.caption_train), read_json(paths.vqa_train)
    order = sorted({record["image"] for record in caption_records})
    index = {path: i for i, path in enumerate(order)}
    scenes = [make_example("train", i, shapes_config(config)).scene for i in range(config.num_train)]
    if order != [make_example("train", i, shapes_config(config)).image for i in range(config.num_train)]:
        raise RuntimeError("caption_train.json does not list the images in index order")
    captions = [{"image_index": index[r["image"]], "caption": clean_caption(r["caption"])} for r in caption_records]
    questions = [{"image_index": index[r["image"]], "question": clean_question(r["question"]),
                  "answer": majority(r["answer"])} for r in vqa_records]
    return TrainData(load_images(paths.root, order, config.image_size), scenes, captions, questions)


def tokenizer_texts(data: TrainData) -> list[str]:
    texts = [row["caption"] for row in data.captions] + [CAPTION_PROMPT]
    texts += [VQA_PROMPT.format(row["question"]) + " " + row["answer"] for row in data.questions]
    return texts + [describe_scene(scene) for scene in data.scenes[:500]]


def train_tokenizers(data: TrainData, directory: Path, vocab_size: int):
    """The LM's T5 tokenizer and the Q-Former's BERT tokenizer, both learned on the training text."""
    texts = tokenizer_texts(data)
    return word_level_t5_tokenizer(texts, directory / "t5"), train_bert_tokenizer(texts, directory / "bert", vocab_size)


# ------------------------------------------------------------------------- the Trainer


def run_trainer(name: str, model: nn.Module, dataset: Dataset, collator: Callable, task: Any, batch_type: type,
                config: DemoConfig, output_dir: Path) -> list[dict[str, float]]:
    """`max_steps` of `Blip2Trainer` (warm-up 10%, cosine to lr/10); returns the logged losses."""
    from mixkit.train.arguments import Blip2TrainingArguments
    from mixkit.train.trainer import Blip2Trainer

    lr = config.learning_rates[name]
    steps = config.steps[name]
    args = Blip2TrainingArguments(
        output_dir=str(output_dir / name), max_steps=steps, per_device_train_batch_size=config.batch_size,
        learning_rate=lr, eta_min=lr / 10, warmup_steps=max(1, steps // 10), weight_decay=0.05,
        logging_steps=max(1, steps // 40), save_strategy="no", report_to="none", seed=config.seed,
        data_seed=config.seed, dataloader_num_workers=0, use_cpu=True, disable_tqdm=True,
    )
    trainer = Blip2Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, task=task,
                           batch_type=batch_type, callbacks=[LossBar(name)])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; `LossBar` shows the loss
    trainer.train()
    return [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]


# ------------------------------------------------------------------------- 2a: the "pretrained" ViT


INIT_STD = 0.02  # BERT's and BLIP-2's initializer_range


def init_weights_(model: nn.Module, skip: tuple[str, ...] = ("temp",)) -> nn.Module:
    """From-scratch initialisation as BERT/BLIP-2 do it (normal 0.02, zero biases, unit norms): PyTorch's
    defaults (unit-variance embeddings, zero query tokens) make the tiny models start far off or symmetric."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in skip:
                continue
            if name.endswith("bias"):
                parameter.zero_()
            elif parameter.ndim == 1:  # norm scales
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, INIT_STD)
    return model


def scene_targets(scene: Scene) -> torch.Tensor:
    """Per grid cell: colour, kind and size (0 = empty); then the background: [28] class indices."""
    cells = {(s.row, s.col): s for s in scene.shapes}
    colours, kinds = list(SHAPE_COLOURS), list(KINDS)
    targets = []
    for cell in sorted(POSITIONS):
        shape = cells.get(cell)
        targets += [0, 0, 0] if shape is None else [
            1 + colours.index(shape.colour), 1 + kinds.index(shape.kind), 1 + SIZES.index(shape.size)]
    return torch.tensor(targets + [list(BACKGROUND_COLOURS).index(scene.background)])


ATTRIBUTE_CLASSES = (len(SHAPE_COLOURS) + 1, len(KINDS) + 1, len(SIZES) + 1)


class VisionPretrainModel(nn.Module):
    """The BLIP-2 ViT (same `vision_model.*` keys) with a linear head over all its patch features."""

    def __init__(self, config: Blip2Config):
        super().__init__()
        self.vision_model = VisionTransformer(config.vision_config)
        tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1
        outputs = len(POSITIONS) * sum(ATTRIBUTE_CLASSES) + len(BACKGROUND_COLOURS)
        self.head = nn.Linear(tokens * config.vision_config.hidden_size, outputs)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.vision_model(pixel_values).flatten(1))


@dataclass
class AttributeBatch:
    pixel_values: torch.Tensor
    targets: torch.Tensor


@dataclass
class LossOnly:
    loss: torch.Tensor


@dataclass
class AttributeTask:
    """Sum of cross-entropies: each cell's colour, kind and size, and the background."""

    def compute(self, model: VisionPretrainModel, batch: AttributeBatch) -> LossOnly:
        logits = model(batch.pixel_values)
        sizes = [*ATTRIBUTE_CLASSES] * len(POSITIONS) + [len(BACKGROUND_COLOURS)]
        parts = torch.split(logits, sizes, dim=1)
        loss = sum(F.cross_entropy(part, batch.targets[:, i]) for i, part in enumerate(parts))
        return LossOnly(loss / len(parts))


def collate_attributes(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([s["image"] for s in samples]),
            "targets": torch.stack([s["targets"] for s in samples])}


def pretrain_vision(config: DemoConfig, data: TrainData, model_config: Blip2Config,
                    output_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    torch.manual_seed(config.seed)
    model = init_weights_(VisionPretrainModel(model_config))
    rows = [{"image_index": i, "targets": scene_targets(scene)} for i, scene in enumerate(data.scenes)]
    losses = run_trainer("vision", model, ImageTextSamples(data.images, rows), collate_attributes,
                         AttributeTask(), AttributeBatch, config, output_dir)
    return {k: v for k, v in model.state_dict().items() if k.startswith("vision_model.")}, losses


# ------------------------------------------------------------------------- 2b: the "pretrained" LM


def describe_scene(scene: Scene) -> str:
    """Everything in the picture, in words: what the pretrained LM reads in place of the image."""
    shapes = ", ".join(f"{s.size} {s.colour} {s.kind} {POSITIONS[(s.row, s.col)]}" for s in scene.shapes)
    count = COUNT_WORDS[len(scene.shapes)]
    return f"{count} shape{'s' if len(scene.shapes) > 1 else ''} on a {scene.background} background: {shapes}."


def prompted_pairs(data: TrainData) -> list[dict[str, Any]]:
    """(image, prompt, target) rows: the caption prompt -> a caption, the VQA prompt -> the answer."""
    rows = [{"image_index": r["image_index"], "text_input": CAPTION_PROMPT, "text_output": r["caption"]}
            for r in data.captions]
    rows += [{"image_index": r["image_index"], "text_input": VQA_PROMPT.format(r["question"]),
              "text_output": r["answer"]} for r in data.questions]
    return rows


@dataclass
class TextBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    decoder_attention_mask: torch.Tensor


@dataclass
class TextTask:
    """Text-only seq2seq loss of the LM itself: the stage-2 loss without the image, averaged per sequence."""

    def compute(self, model: nn.Module, batch: TextBatch) -> LossOnly:
        config = model.config
        decoder_ids = shift_right(batch.labels, config.decoder_start_token_id, config.pad_token_id)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       decoder_input_ids=decoder_ids, decoder_attention_mask=batch.decoder_attention_mask).logits
        # Mean per sequence, then over the batch: a 1-token answer counts as much as a 15-token caption.
        per_token = F.cross_entropy(logits.transpose(1, 2).float(), batch.labels, ignore_index=-100, reduction="none")
        labelled = (batch.labels != -100).float()
        return LossOnly(((per_token * labelled).sum(1) / labelled.sum(1).clamp(min=1)).mean())


@dataclass
class DescribedCollator:
    """Prompt rows -> `TextBatch` fields: the scene description goes in front of the prompt."""

    tokenizer: PreTrainedTokenizerBase
    scenes: list[Scene]

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        described = [{**s, "text_input": describe_scene(self.scenes[s["image_index"]]) + " " + s["text_input"]}
                     for s in samples]
        # `pixel_values` stays: `Blip2Trainer` reads a batch without it as "every image was unreadable".
        return Stage2Collator(self.tokenizer, encoder_decoder=True, max_text_length=96)(described)


def pretrain_language(config: DemoConfig, data: TrainData, tokenizer: PreTrainedTokenizerBase,
                      model_config: Blip2Config, output_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    torch.manual_seed(config.seed)
    model = init_weights_(AutoModelForSeq2SeqLM.from_config(model_config.text_config))
    losses = run_trainer("language", model, ImageTextSamples(data.images, prompted_pairs(data)),
                         DescribedCollator(tokenizer, data.scenes), TextTask(), TextBatch, config, output_dir)
    return model.state_dict(), losses


# ------------------------------------------------------------------------- 3, 4: BLIP-2 stages


def train_stage1(config: DemoConfig, data: TrainData, tokenizer: PreTrainedTokenizerBase,
                 model_config: Blip2Config, vision: dict[str, torch.Tensor],
                 output_dir: Path) -> tuple[Blip2Stage1Model, list[dict]]:
    torch.manual_seed(config.seed)
    model = init_weights_(Blip2Stage1Model(model_config))
    # Only the ViT: the rest starts fresh, as in BLIP-2. Every given weight must land somewhere.
    unexpected = model.load_state_dict(vision, strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f"stage-1 model: pretrained ViT weights it does not have: {unexpected[:5]}")
    model.lock_image_tower()
    rows = [{"image_index": r["image_index"], "text_input": r["caption"]} for r in data.captions]
    task = Stage1Task(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    losses = run_trainer("stage1", model.train(), ImageTextSamples(data.images, rows), Stage1Collator(tokenizer),
                         task, Stage1Batch, config, output_dir)
    return model.eval(), losses


def stage2_model(model_config: Blip2Config, vision: dict, language: dict, stage1: Blip2Stage1Model) -> Blip2Model:
    """Frozen ViT and LM from pretraining; Q-Former, queries and ln_vision from stage 1."""
    model = init_weights_(Blip2Model(model_config))
    own = model.state_dict()
    taken = {k: v for k, v in stage1.state_dict().items() if k in own and own[k].shape == v.shape}
    taken.update(vision)
    taken.update({f"language_model.{k}": v for k, v in language.items()})
    missing = set(own) - set(taken) - {"language_projection.weight", "language_projection.bias"}
    if missing:
        raise RuntimeError(f"stage-2 model: no weights for {sorted(missing)[:5]}")
    model.load_state_dict(taken, strict=False)
    model.lock_frozen_parts()
    return model


def train_stage2(config: DemoConfig, data: TrainData, tokenizer: PreTrainedTokenizerBase,
                 model: Blip2Model, output_dir: Path) -> list[dict]:
    dataset = ImageTextSamples(data.images, prompted_pairs(data))
    collator = Stage2Collator(tokenizer, encoder_decoder=True)
    return run_trainer("stage2", model.train(), dataset, collator, Stage2Task(), Stage2Batch, config, output_dir)


def demo_settings(config: DemoConfig):
    """The reference T5 settings with the demo's beam width; no minimum caption length (the shortest
    shapes captions are 5 tokens, the reference minimum is 7)."""
    from mixkit.apps.predictor import PredictionSettings
    from mixkit.models.catalogue import T5_CAPTION, T5_VQA

    return PredictionSettings(CAPTION_PROMPT, VQA_PROMPT,
                              replace(T5_CAPTION, num_beams=config.num_beams, min_new_tokens=0),
                              replace(T5_VQA, num_beams=config.num_beams))


def save_predictor(config: DemoConfig, model: Blip2Model, tokenizer: PreTrainedTokenizerBase, directory: Path):
    from mixkit.apps.predictor import Blip2Predictor

    predictor = Blip2Predictor(model.eval(), tokenizer, ImageProcessorConfig(image_size=config.image_size),
                               demo_settings(config))
    predictor.save_pretrained(directory)
    return predictor


# ------------------------------------------------------------------------- 5: evaluation


def eval_args(task: str, model_dir: Path, output_dir: Path, paths: ShapesPaths) -> argparse.Namespace:
    """What `mixkit eval vqa|caption` would parse, for the held-out test split."""
    common = dict(model=str(model_dir), output_dir=output_dir, prompt=None, num_beams=None, max_new_tokens=None,
                  min_new_tokens=None, length_penalty=None, batch_size=50, save_every=100, resume=False,
                  device="cpu", fp32=True, split="test")
    if task == "vqa":
        return argparse.Namespace(**common, questions=paths.vqa_questions["test"],
                                  annotations=paths.vqa_annotations["test"], image_root=paths.root,
                                  image_pattern="images/test/shapes_test_{image_id:06d}.jpg")
    return argparse.Namespace(**common, records=paths.caption_test, image_root=paths.root,
                              gt=paths.caption_gt["test"], spice=False)


def evaluate_model(model_dir: Path, output_dir: Path, paths: ShapesPaths) -> dict[str, dict]:
    """Both end-to-end evaluations; each writes its official result file and metrics.json."""
    from mixkit.eval import caption_eval, vqa_eval
    from mixkit.eval.runner import DistContext

    return {task: module.evaluate(eval_args(task, model_dir, output_dir / task, paths), DistContext())
            for task, module in (("vqa", vqa_eval), ("caption", caption_eval))}


def baseline_scores(paths: ShapesPaths, output_dir: Path) -> dict[str, dict]:
    """The two "no image" baselines, written and scored like the model's results."""
    from mixkit.eval.caption_score import score_captions
    from mixkit.eval.vqa_score import score_vqa

    prior = most_frequent_answer_by_question_type(read_json(paths.vqa_train))
    questions = read_json(paths.vqa_questions["test"])
    vqa = [{"question_id": q["question_id"], "answer": prior.get(question_type_of(q["question"]), "yes")}
           for q in questions["questions"]]
    caption = most_frequent_caption(read_json(paths.caption_train))
    gt = read_json(paths.caption_gt["test"])
    captions = [{"image_id": image["id"], "caption": caption} for image in gt["images"]]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "test_vqa_result.json").write_text(json.dumps(vqa) + "\n")
    (output_dir / "test_caption_result.json").write_text(json.dumps(captions) + "\n")
    return {"vqa": score_vqa(questions, read_json(paths.vqa_annotations["test"]), vqa).to_json(),
            "caption": score_captions(gt, captions), "caption_text": caption}


# ------------------------------------------------------------------------- 6: examples


def predict_examples(predictor, paths: ShapesPaths, count: int, image_dir: Path) -> list[dict[str, Any]]:
    """Caption and answer every question of the first `count` test images; copies the images."""
    records = read_json(paths.caption_test)[:count]
    questions = read_json(paths.vqa_questions["test"])["questions"]
    truth = {a["question_id"]: a["multiple_choice_answer"]
             for a in read_json(paths.vqa_annotations["test"])["annotations"]}
    image_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for record in records:
        image = load_image(paths.root / record["image"])
        asked = [q for q in questions if q["image_id"] == record["image_id"]]
        answers = predictor.answer([image] * len(asked), [q["question"] for q in asked])
        name = Path(record["image"]).name
        shutil.copyfile(paths.root / record["image"], image_dir / name)
        examples.append({
            "image": f"{image_dir.name}/{name}", "caption": predictor.caption([image])[0],
            "references": record["caption"],
            "qa": [{"question": q["question"], "answer": a, "truth": truth[q["question_id"]]}
                   for q, a in zip(asked, answers)],
        })
    return examples


# ------------------------------------------------------------------------- 7: results


def peak_memory_mib() -> dict[str, float]:
    """Peak resident memory (ru_maxrss is in KiB on Linux) of this process and of its children (Java)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_memory_mib": round(own, 1), "peak_memory_children_mib": round(children, 1)}


def build_metrics(config: DemoConfig, evaluation: dict, baselines: dict, losses: dict, seconds: dict,
                  wall: float) -> dict[str, Any]:
    vqa, caption = evaluation["vqa"]["scores"], evaluation["caption"]["scores"]
    return {
        "vqa_accuracy": vqa["overall"],
        "vqa_baseline_accuracy": baselines["vqa"]["overall"],
        "vqa_per_answer_type": vqa["perAnswerType"],
        "vqa_baseline_per_answer_type": baselines["vqa"]["perAnswerType"],
        "cider": caption["CIDEr"],
        "cider_baseline": baselines["caption"]["CIDEr"],
        "caption_scores": caption,
        "caption_baseline_scores": baselines["caption"],
        "caption_baseline_text": baselines["caption_text"],
        "num_test_images": evaluation["caption"]["num_images"],
        "num_test_questions": evaluation["vqa"]["num_questions"],
        "final_losses": {stage: rows[-1]["loss"] for stage, rows in losses.items() if rows},
        "stage_seconds": {name: round(value, 1) for name, value in seconds.items()},
        "wall_time_s": round(wall, 1),
        **peak_memory_mib(),
        "config": asdict(config),
        "versions": library_versions(),
    }


# ------------------------------------------------------------------------- the pipeline


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


class Timer:
    """Seconds per named phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, function: Callable, *args: Any) -> Any:
        start = time.perf_counter()
        result = function(*args)
        self.seconds[name] = time.perf_counter() - start
        return result


def run_demo(config: DemoConfig, output: Path) -> dict[str, Any]:
    """The whole workflow into `output`; returns the metrics (also in `output/metrics.json`)."""
    from mixkit.apps.report import write_report

    output.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed, config.threads)
    progress, timer = Progress(8), Timer()
    work = output / "work"
    progress.step(f"writing the shapes data ({config.num_train} train / {config.num_test} test images)")
    paths = timer("data", write_data, config, work / "data")
    data = timer("load", load_train_data, paths, config)
    progress.step("training the tokenizers (T5 for the LM, BERT for the Q-Former)")
    t5_tokenizer, bert_tokenizer = train_tokenizers(data, work / "tokenizers", config.vocab_size)
    stage2_config = blip2_config(config, len(t5_tokenizer), len(bert_tokenizer), stage1=False)
    progress.step("pretraining the image encoder (colour, kind, size per grid cell)")
    vision, vision_losses = timer("vision", pretrain_vision, config, data, stage2_config, work / "runs")
    progress.step("pretraining the language model (scene description + prompt -> text)")
    language, language_losses = timer("language", pretrain_language, config, data, t5_tokenizer, stage2_config,
                                      work / "runs")
    progress.step("stage 1: Q-Former ITC + ITM + ITG, ViT frozen")
    stage1_config = blip2_config(config, len(t5_tokenizer), len(bert_tokenizer), stage1=True)
    stage1, stage1_losses = timer("stage1", train_stage1, config, data, bert_tokenizer, stage1_config, vision,
                                  work / "runs")
    progress.step("stage 2: Q-Former + projection, ViT and LM frozen, captions and VQA")
    model = stage2_model(stage2_config, vision, language, stage1)
    stage2_losses = timer("stage2", train_stage2, config, data, t5_tokenizer, model, work / "runs")
    predictor = save_predictor(config, model, t5_tokenizer, work / "checkpoint")
    progress.step(f"evaluating on the held-out split (checkpoint: {work / 'checkpoint'})")
    evaluation = timer("eval", evaluate_model, work / "checkpoint", work / "eval", paths)
    baselines = timer("baselines", baseline_scores, paths, work / "eval" / "baselines")
    progress.step("predicting examples and writing the report")
    examples = predict_examples(predictor, paths, config.num_examples, output / "images")
    losses = {"vision": vision_losses, "language": language_losses, "stage1": stage1_losses,
              "stage2": stage2_losses}
    metrics = build_metrics(config, evaluation, baselines, losses, timer.seconds, progress.elapsed())
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(output, metrics, losses, examples)
    return metrics


def summary(metrics: dict[str, Any]) -> str:
    return "\n".join([
        f"VQA accuracy   {metrics['vqa_accuracy']:6.2f}   (baseline {metrics['vqa_baseline_accuracy']:.2f})",
        f"CIDEr          {metrics['cider']:6.3f}   (baseline {metrics['cider_baseline']:.3f})",
        f"wall time      {metrics['wall_time_s']:6.1f} s, peak memory {metrics['peak_memory_mib']:.0f} MiB",
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mixkit demo`."""
    parser.add_argument("--output", type=Path, default=Path("mixkit-demo"),
                        help="folder for metrics.json, report.html and the run's files (default ./mixkit-demo)")
    parser.add_argument("--seed", type=int, default=0, help="one seed for data, weights and batches (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; see DemoConfig)")


def run(args: argparse.Namespace) -> int:
    """`mixkit demo`: progress on stderr, the summary and the report's path on stdout."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    metrics = run_demo(DemoConfig(seed=args.seed, threads=args.threads), args.output)
    print(summary(metrics))
    print(f"report: {(args.output / 'report.html').resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixkit demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
