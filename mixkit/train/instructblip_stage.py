"""`mixkit train instructblip`: InstructBLIP instruction tuning on records {image, instruction, answer}.

LAVIS never released this training code (only the models' `forward`); this recipe follows those `forward`s
(`lavis/models/blip2_models/blip2_vicuna_instruct.py` and `blip2_t5_instruct.py`, commit 506965b):
- the instruction goes to the Q-Former (BERT tokenizer, padded to the batch's longest, truncated on the left at
  `max_text_length`, LAVIS `max_txt_len` 128) beside the queries, and to the LLM;
- decoder-only LLM (Vicuna/Llama, OPT): the text is [instruction tokens (with bos)] + [answer tokens + eos], the
  answers' padding moved behind (`concat_text_input_output`); labels: the answer and its eos only (instruction and
  padding -100); the answer is truncated at 256 tokens (`max_output_txt_len`);
- encoder-decoder LLM (Flan-T5): the instruction is the encoder's text after the queries, the answer (with `</s>`)
  the decoder target;
- trained: the Q-Former (its instruction embeddings and text feed-forward blocks included), the queries,
  `ln_vision` and the projection; the ViT blocks and the LLM stay frozen (LAVIS `freeze_vit`, and every LLM
  parameter has `requires_grad=False`).
Records are a JSON list of {"image": path under --image_root, "instruction": str, "answer": str}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mixkit.data.bad_images import SkipBadImages, collate_skipping_none
from mixkit.data.transforms import ImageProcessorConfig, TrainImageTransform, load_image
from mixkit.models.hub import resolve_checkpoint
from mixkit.models.instructblip.modeling import InstructBlipModel
from mixkit.models.instructblip.reference import reference_settings
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.collators import stack_images
from mixkit.train.stage1_task import shifted_lm_loss
from mixkit.train.stage2_task import (IGNORE_INDEX, Stage2Batch, Stage2Losses, _required_id, prepend_ignored,
                                      seq2seq_lm_loss, shift_right)
from mixkit.train.stages import StageParts, load_extra_weights

MAX_ANSWER_TOKENS = 256  # LAVIS max_output_txt_len
RECORD_FIELDS = ("image", "instruction", "answer")


def read_instruction_records(path: str | Path) -> list[dict[str, str]]:
    """The records of one annotation file; a missing field or a non-string one names the file and record."""
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the instruction records: {error}") from None
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON list of {{image, instruction, answer}} records")
    for index, record in enumerate(records):
        bad = [name for name in RECORD_FIELDS if not isinstance(record, dict) or not isinstance(record.get(name), str)
               or not record[name].strip()]
        if bad:
            raise ValueError(f"{path}: record {index}: missing or empty {', '.join(bad)} (each record needs "
                             f"{', '.join(RECORD_FIELDS)})")
    return records


class InstructionDataset(Dataset):
    """{image, instruction, answer} records -> {"image", "text_input", "text_output"} samples (LAVIS's keys)."""

    def __init__(self, records: list[dict[str, str]], image_root: str | Path, transform: TrainImageTransform):
        self.records, self.image_root, self.transform = records, Path(image_root), transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        return {"image": self.transform(load_image(self.image_root / record["image"])),
                "text_input": record["instruction"], "text_output": record["answer"]}

    def missing_images(self) -> list[str]:
        return sorted({r["image"] for r in self.records if not (self.image_root / r["image"]).is_file()})


@dataclass
class InstructBlipBatch(Stage2Batch):
    qformer_input_ids: torch.Tensor | None = None
    qformer_attention_mask: torch.Tensor | None = None


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])


@dataclass
class InstructBlipCollator:
    """Samples -> `InstructBlipBatch` fields, as LAVIS's InstructBLIP `forward`s tokenize (see the module doc)."""

    tokenizer: PreTrainedTokenizerBase  # the LLM's
    qformer_tokenizer: PreTrainedTokenizerBase  # truncation_side "left", set once when built
    encoder_decoder: bool
    max_text_length: int = 128

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        instructions = [sample["text_input"] for sample in samples]
        answers = [sample["text_output"] for sample in samples]
        qformer = self.qformer_tokenizer(instructions, padding="longest", truncation=True,
                                         max_length=self.max_text_length, padding_side="right", return_tensors="pt")
        text = self._seq2seq(instructions, answers) if self.encoder_decoder else self._causal(instructions, answers)
        return {"pixel_values": stack_images(samples), **text, "qformer_input_ids": qformer.input_ids,
                "qformer_attention_mask": qformer.attention_mask}

    def _causal(self, instructions: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        ids, labels = [], []
        for instruction, answer in zip(instructions, answers):
            prompt = self.tokenizer(instruction)["input_ids"]
            if len(prompt) > self.max_text_length:  # keep the bos and the end, as LAVIS's left truncation does
                prompt = prompt[:1] + prompt[len(prompt) - self.max_text_length + 1:]
            target = self.tokenizer(answer + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            target = target[:MAX_ANSWER_TOKENS]
            ids.append(prompt + target)
            labels.append([IGNORE_INDEX] * len(prompt) + target)
        input_ids = _pad(ids, self.tokenizer.pad_token_id)
        mask = _pad([[1] * len(row) for row in ids], 0)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": _pad(labels, IGNORE_INDEX)}

    def _seq2seq(self, instructions: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        encoder = self.tokenizer(instructions, padding="longest", truncation=True, max_length=self.max_text_length,
                                 padding_side="right", return_tensors="pt")
        decoder = self.tokenizer(answers, padding="longest", truncation=True, max_length=MAX_ANSWER_TOKENS,
                                 padding_side="right", return_tensors="pt")
        labels = decoder.input_ids.masked_fill(decoder.attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": encoder.input_ids, "attention_mask": encoder.attention_mask, "labels": labels,
                "decoder_attention_mask": decoder.attention_mask}


@dataclass
class InstructBlipTask:
    """The LM loss of the answer given image and instruction (what LAVIS's InstructBLIP `forward`s return)."""

    label_smoothing: float = 0.0
    counts_label_tokens: ClassVar[bool] = True  # see `Stage2Task`

    def compute(self, model: InstructBlipModel, batch: InstructBlipBatch,
                num_items_in_batch: int | torch.Tensor | None = None) -> Stage2Losses:
        reduction = "mean" if num_items_in_batch is None else "sum"
        instruction = {"qformer_input_ids": batch.qformer_input_ids,
                       "qformer_attention_mask": batch.qformer_attention_mask}
        if model.is_encoder_decoder:
            text_config = model.config.text_config
            decoder_input_ids = shift_right(batch.labels,
                                            _required_id(text_config.decoder_start_token_id, "decoder_start_token_id"),
                                            _required_id(text_config.pad_token_id, "pad_token_id"))
            output = model(batch.pixel_values, batch.input_ids, batch.attention_mask, **instruction,
                           decoder_input_ids=decoder_input_ids, decoder_attention_mask=batch.decoder_attention_mask)
            loss = seq2seq_lm_loss(output.logits, batch.labels, self.label_smoothing, reduction)
        else:
            output = model(batch.pixel_values, batch.input_ids, batch.attention_mask, **instruction)
            labels = prepend_ignored(batch.labels, output.num_query_positions)
            loss = shifted_lm_loss(output.logits, labels, self.label_smoothing, reduction)
        return Stage2Losses(loss if num_items_in_batch is None else loss / num_items_in_batch)


def _qformer_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    from mixkit.pipelines.instructblip import QFORMER_TOKENIZER_DIR

    tokenizer = AutoTokenizer.from_pretrained(model_dir / QFORMER_TOKENIZER_DIR)
    tokenizer.truncation_side = "left"  # once, at build: LAVIS's init_tokenizer(truncation_side="left")
    return tokenizer


def _save_extras(tokenizer: PreTrainedTokenizerBase, qformer_tokenizer: PreTrainedTokenizerBase, image_size: int,
                 encoder_decoder: bool, directory: Path) -> None:
    from mixkit.pipelines.instructblip import QFORMER_TOKENIZER_DIR

    tokenizer.save_pretrained(directory)
    qformer_tokenizer.save_pretrained(Path(directory) / QFORMER_TOKENIZER_DIR)
    ImageProcessorConfig(image_size=image_size).save(directory)
    reference_settings(encoder_decoder).save(directory)


def _dataset(data: DataArguments, seed: int) -> Dataset:
    if not data.data_files:
        raise ValueError("instructblip: give --data_files, JSON lists of {image, instruction, answer} records")
    records = [record for path in data.data_files for record in read_instruction_records(path)]
    transform = TrainImageTransform(ImageProcessorConfig(image_size=data.image_size))
    dataset = InstructionDataset(records, data.image_root or ".", transform)
    missing = dataset.missing_images()
    if missing:
        raise FileNotFoundError(f"{len(missing)} image files of --data_files are missing under "
                                f"{data.image_root or '.'}, e.g. {', '.join(missing[:5])}")
    return SkipBadImages(dataset)


def build_instructblip_stage(model_args: ModelArguments, data: DataArguments, seed: int = 42) -> StageParts:
    model_dir = resolve_checkpoint(model_args.model_name_or_path)
    model = InstructBlipModel.from_pretrained(model_dir)
    if model_args.load_model_path:
        load_extra_weights(model, model_args.load_model_path)
    model.lock_language_model(keep_dropout=model_args.language_model_dropout)
    if model_args.freeze_vit:
        model.lock_image_tower()
    tokenizer, qformer_tokenizer = AutoTokenizer.from_pretrained(model_dir), _qformer_tokenizer(model_dir)
    collator = InstructBlipCollator(tokenizer, qformer_tokenizer, model.is_encoder_decoder, data.max_text_length)
    return StageParts(
        model=model.train(),
        task=InstructBlipTask(),
        batch_type=InstructBlipBatch,
        collator=partial(collate_skipping_none, collate_fn=collator),
        dataset=_dataset(data, seed),
        save_extras=partial(_save_extras, tokenizer, qformer_tokenizer, data.image_size, model.is_encoder_decoder),
        base_model=str(model_dir) if model_args.save_trainable_only else None,
    )
