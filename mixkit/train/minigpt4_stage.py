"""MiniGPT-4 stage 1 / stage 2 and MiniGPT-v2 fine-tuning on the shared training loop (`Blip2Trainer`).

As `MiniGPTBase.forward` trains (Vision-CAIR/MiniGPT-4 d94738a, `minigpt4/models/minigpt_base.py`,
`preparing_embedding`, `prompt_wrap`, `concat_emb_input_output`):

- one sequence per sample: BOS, then the instruction with the image tokens in place of `<ImageHere>` (each
  text segment tokenized without special tokens), then the answer + `end_sym` (truncated to `max_txt_len`
  tokens), right-padded; the loss is the LLM's next-token cross-entropy on the answer tokens only (pad-token
  positions excluded), a mean over them;
- stage 1 (`minigpt4-stage1`): no instruction (`prompt_list` is empty), the caption ends with "\\n";
- stage 2 (`minigpt4-stage2`): a random line of `prompts/alignment.txt` in the checkpoint's training template
  (`###Human: {} ###Assistant: ` for Vicuna v0, `[INST] {} [/INST] ` for Llama-2), answers end with "###"
  (Vicuna) or "</s>" (Llama-2), at most 160 answer tokens;
- MiniGPT-v2 (`minigptv2`): `[INST] {} [/INST]` around "<Img><ImageHere></Img> {instruction} " and "</s>"
  after the answer; its records are RefCOCO-format referring expressions here (`[refer]` -> box text, as
  `ReferCOCODataset` builds them) and LoRA trains with `llama_proj`.

Only `llama_proj` (and the LoRA weights) train; the frozen towers stay in eval mode.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import LlamaTokenizer, PreTrainedTokenizerBase

from mixkit.data.bad_images import collate_skipping_none
from mixkit.data.shapes.grounding import refcoco_image_path
from mixkit.data.transforms import ImageProcessorConfig, TrainImageTransform
from mixkit.models.hub import resolve_checkpoint
from mixkit.models.minigpt4.boxes import format_box
from mixkit.models.minigpt4.modeling import MiniGPT4Model
from mixkit.models.minigpt4.templates import IMAGE_MESSAGE, TEMPLATES, V2_REFER_PROMPT, prompt_segments
from mixkit.models.minigpt4.templates import reference_settings
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.stage1_task import shifted_lm_loss
from mixkit.train.stage2_task import IGNORE_INDEX

MINIGPT_STAGES = ("minigpt4-stage1", "minigpt4-stage2", "minigptv2")
# prompts/alignment.txt: the stage-2 instructions, one picked at random per sample
ALIGNMENT_PROMPTS = (
    "<Img><ImageHere></Img> Describe this image in detail.",
    "<Img><ImageHere></Img> Take a look at this image and describe what you notice.",
    "<Img><ImageHere></Img> Please provide a detailed description of the picture.",
    "<Img><ImageHere></Img> Could you describe the contents of this image for me?",
)
END_SYMBOLS = {"vicuna0": "###", "llama2": "</s>", "minigptv2": "</s>"}  # the configs' end_sym


@dataclass
class MiniGPT4Batch:
    pixel_values: torch.Tensor
    input_ids: torch.Tensor  # image slots hold 0
    attention_mask: torch.Tensor
    image_mask: torch.Tensor  # True at the image slots
    labels: torch.Tensor  # aligned with input_ids, -100 = no loss


@dataclass
class MiniGPT4Losses:
    loss: torch.Tensor


@dataclass
class MiniGPT4Task:
    """The language-modelling loss on the answer tokens; the model only produces logits."""

    counts_label_tokens: ClassVar[bool] = True

    def compute(self, model: MiniGPT4Model, batch: MiniGPT4Batch,
                num_items_in_batch: int | torch.Tensor | None = None) -> MiniGPT4Losses:
        logits = model(batch.pixel_values, batch.input_ids, batch.attention_mask, batch.image_mask)
        if num_items_in_batch is None:
            return MiniGPT4Losses(shifted_lm_loss(logits, batch.labels, 0.0))
        return MiniGPT4Losses(shifted_lm_loss(logits, batch.labels, 0.0, "sum") / num_items_in_batch)


@dataclass
class MiniGPT4Collator:
    """Samples {"image", "instruction" (None or with `<ImageHere>`), "answer"} -> `MiniGPT4Batch` fields."""

    tokenizer: PreTrainedTokenizerBase
    num_image_tokens: int
    end_symbol: str
    max_answer_tokens: int = 32  # max_txt_len: 32 in stage 1, 160 in stage 2

    def sample_ids(self, instruction: str | None, answer: str) -> tuple[list[int], list[bool], list[int]]:
        """(ids, image slots, labels) of one sample, unpadded."""
        ids = [self.tokenizer.bos_token_id]
        slots = [False]
        segments = prompt_segments(instruction) if instruction else ["", ""]  # stage 1: the image alone
        for index, segment in enumerate(segments):
            if index > 0:
                ids += [0] * self.num_image_tokens
                slots += [True] * self.num_image_tokens
            tokens = self.tokenizer(segment, add_special_tokens=False)["input_ids"] if segment else []
            ids += tokens
            slots += [False] * len(tokens)
        answer_ids = self.tokenizer(answer + self.end_symbol, add_special_tokens=False)["input_ids"]
        answer_ids = answer_ids[: self.max_answer_tokens]
        labels = [IGNORE_INDEX] * len(ids) + [i if i != self.tokenizer.pad_token_id else IGNORE_INDEX
                                              for i in answer_ids]
        return ids + answer_ids, slots + [False] * len(answer_ids), labels

    def __call__(self, samples: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [self.sample_ids(sample["instruction"], sample["answer"]) for sample in samples]
        longest = max(len(ids) for ids, _, _ in rows)
        pad = self.tokenizer.pad_token_id
        batch = {"input_ids": torch.full((len(rows), longest), pad), "attention_mask": torch.zeros(len(rows), longest,
                 dtype=torch.long), "image_mask": torch.zeros(len(rows), longest, dtype=torch.bool),
                 "labels": torch.full((len(rows), longest), IGNORE_INDEX)}
        for index, (ids, slots, labels) in enumerate(rows):
            batch["input_ids"][index, : len(ids)] = torch.tensor(ids)
            batch["attention_mask"][index, : len(ids)] = 1
            batch["image_mask"][index, : len(ids)] = torch.tensor(slots)
            batch["labels"][index, : len(ids)] = torch.tensor(labels)
        return {"pixel_values": torch.stack([sample["image"] for sample in samples]), **batch}


class InstructionSamples(Dataset):
    """Caption samples -> {"image", "instruction", "answer"}: stage 1 without instruction, stage 2 with a seeded
    random alignment prompt in the training template."""

    def __init__(self, captions: Dataset, training_template: str | None, seed: int):
        self.captions, self.template, self.seed = captions, training_template, seed

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.captions[index]
        if sample is None:  # an unreadable image, skipped by the collator
            return None
        instruction = None
        if self.template is not None:
            instruction = self.template.format(random.Random(f"{self.seed}/{index}").choice(ALIGNMENT_PROMPTS))
        return {"image": sample["image"], "instruction": instruction, "answer": sample["text_input"]}


class RefcocoInstructions(Dataset):
    """RefCOCO-format records (`img_id`, `sents`, `bbox` [x, y, w, h], `height`, `width`) -> MiniGPT-v2
    `[refer]` samples whose answer is the box text."""

    def __init__(self, records_file: str | Path, image_root: str | Path, transform: TrainImageTransform,
                 training_template: str):
        self.records = json.loads(Path(records_file).read_text())
        self.image_root, self.transform, self.template = Path(image_root), transform, training_template
        missing = [r["img_id"] for r in self.records if not refcoco_image_path(self.image_root, r["img_id"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{records_file}: {len(missing)} images not under {image_root}, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        x, y, w, h = record["bbox"]
        image = Image.open(refcoco_image_path(self.image_root, record["img_id"])).convert("RGB")
        instruction = f"{IMAGE_MESSAGE} {V2_REFER_PROMPT.format(record['sents'])} "  # ReferCOCODataset
        return {"image": self.transform(image), "instruction": self.template.format(instruction),
                "answer": format_box((x, y, x + w, y + h), record["width"], record["height"])}


def _model(model_dir: Path, args: ModelArguments) -> MiniGPT4Model:
    model = MiniGPT4Model.from_pretrained(model_dir)
    if args.load_model_path:  # a stage-1 checkpoint to start stage 2 (the configs' `ckpt`)
        from mixkit.train.stages import load_extra_weights

        load_extra_weights(model, args.load_model_path)
    model.lock_frozen_parts()
    return model.train()


def _save_extras(tokenizer: PreTrainedTokenizerBase, image_size: int, template: str, directory: Path) -> None:
    tokenizer.save_pretrained(directory)
    ImageProcessorConfig(image_size=image_size).save(directory)
    reference_settings(template).save(directory)


def build_minigpt4_stage(stage: str, model_args: ModelArguments, data: DataArguments, seed: int = 42) -> Any:
    """The `StageParts` of one MiniGPT stage (see the module docstring)."""
    from mixkit.train.stages import StageParts, _dataset  # stages imports this module lazily

    model_dir = resolve_checkpoint(model_args.model_name_or_path)
    model = _model(model_dir, model_args)
    template_name = model.config.conversation_template
    if (stage == "minigptv2") != (template_name == "minigptv2"):
        raise ValueError(f"{stage} cannot train {model_dir} (a {template_name} checkpoint)")
    tokenizer = LlamaTokenizer.from_pretrained(model_dir, legacy=True)
    template = TEMPLATES[template_name].training_template
    # MiniGPT-4's `blip2_image_train` crops and normalises but never flips (Vision-CAIR/MiniGPT-4,
    # minigpt4/processors/blip_processors.py); a flip would also falsify box targets and "on the left".
    transform = TrainImageTransform(ImageProcessorConfig(image_size=data.image_size), flip=False)
    if stage == "minigptv2":
        if not data.data_files or not data.image_root:
            raise ValueError("minigptv2 trains on RefCOCO-format records: give --data_files and --image_root")
        dataset: Dataset = RefcocoInstructions(data.data_files[0], data.image_root, transform, template)
    else:
        dataset = InstructionSamples(_dataset(data, seed, transform), template if stage == "minigpt4-stage2" else None,
                                     seed)
    end = "\n" if stage == "minigpt4-stage1" else END_SYMBOLS[template_name]
    collator = MiniGPT4Collator(tokenizer, model.num_image_tokens(data.image_size), end, data.max_text_length)
    return StageParts(model=model, task=MiniGPT4Task(), batch_type=MiniGPT4Batch,
                      collator=partial(collate_skipping_none, collate_fn=collator), dataset=dataset,
                      save_extras=partial(_save_extras, tokenizer, data.image_size, template_name),
                      base_model=str(model_dir) if model_args.save_trainable_only else None)
