"""Collators: dataset samples -> tensors for the stage-1 and stage-2 tasks. All tokenization happens here.

Each collator returns a plain dict whose keys are the fields of the task's batch dataclass (`Stage1Batch`,
`Stage2Batch`), so `transformers.Trainer` can move it to the device and
`mixkit.data.bad_images.collate_skipping_none` can add its bookkeeping keys; `to_batch` turns it into the
dataclass and drops those extra keys. The padding side is passed per call; no tokenizer is modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from transformers import PreTrainedTokenizerBase

from mixkit.train.stage2_task import IGNORE_INDEX

BatchT = TypeVar("BatchT")
Sample = Mapping[str, Any]


def to_batch(batch_type: type[BatchT], collated: Mapping[str, Any]) -> BatchT:
    """The batch dataclass from a collated dict, ignoring keys it has no field for (e.g. `num_skipped`)."""
    names = {field.name for field in dataclasses.fields(batch_type)}  # type: ignore[arg-type]
    return batch_type(**{key: value for key, value in collated.items() if key in names})


def stack_images(samples: Sequence[Sample]) -> torch.Tensor:
    return torch.stack([sample["image"] for sample in samples])


def mask_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Labels = ids with padded positions set to -100 (by the mask, so a pad id used as a token survives)."""
    return input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)


@dataclass
class Stage1Collator:
    """Caption samples -> `Stage1Batch` fields: [CLS] text [SEP], right-padded, truncated at `max_text_length`."""

    tokenizer: PreTrainedTokenizerBase  # the Q-Former's BERT tokenizer
    max_text_length: int = 32
    use_image_ids: bool = False  # retrieval fine-tuning: captions of the same image are all positives
    # Fixed length, as LAVIS: under several processes ITM gathers every process's token ids, which needs equal
    # shapes. One process may pad to the batch's longest caption: the same losses (padding is masked
    # everywhere), less work in every text pass.
    pad_to_longest: bool = False

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            [sample["text_input"] for sample in samples],
            padding="longest" if self.pad_to_longest else "max_length",
            truncation=True,
            max_length=self.max_text_length,
            padding_side="right",
            return_tensors="pt",
        )
        batch = {
            "pixel_values": stack_images(samples),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }
        if self.use_image_ids:
            batch["image_ids"] = torch.tensor([int(sample["image_id"]) for sample in samples])
        return batch


@dataclass
class Stage2Collator:
    """Caption samples -> `Stage2Batch` fields, as LAVIS's `Blip2OPT.forward` / `Blip2T5.forward` tokenize.

    `prompt` is the text put in front of each caption, verbatim (`"a photo of "` for caption fine-tuning); set
    `prompt_in_text` when the dataset's `CaptionProcessor` already put it there. Decoder-only: the text is
    prompt + caption + "\\n", and the prompt tokens (with OPT's leading `</s>`) get no loss. Encoder-decoder: the
    prompt goes to the encoder and the caption is the decoder target; a sample with a `text_output` key (VQA:
    question prompt -> answer) sends `text_input` to the encoder and `text_output` to the decoder instead.
    """

    tokenizer: PreTrainedTokenizerBase
    encoder_decoder: bool
    prompt: str = ""
    max_text_length: int = 32
    newline_eos: bool = True  # decoder-only: end each target with "\n", OPT-BLIP-2's stop token
    prompt_in_text: bool = False

    def __post_init__(self) -> None:
        if self.max_text_length < 1:
            raise ValueError(f"max_text_length must be positive, got {self.max_text_length}")

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        if self.encoder_decoder:
            text = self._encoder_decoder_text(samples)
        else:
            text = self._decoder_only_text(samples)
        return {"pixel_values": stack_images(samples), **text}

    @property
    def prompt_length(self) -> int:
        """Tokens of the prompt as LAVIS counts them (bos included). The trailing space of "a photo of " joins
        the caption's first word ("Ġa"), so it is stripped before counting: LAVIS counts "a photo of"."""
        prompt = self.prompt.rstrip()
        if not prompt:
            return 0  # LAVIS masks nothing without a prompt, not even the bos
        return len(self.tokenizer(prompt)["input_ids"])

    def _captions(self, samples: Sequence[Sample]) -> list[str]:
        captions = [sample["text_input"] for sample in samples]
        if not self.prompt_in_text:
            return captions
        for caption in captions:
            if not caption.startswith(self.prompt):
                raise ValueError(f"prompt_in_text is set but {caption!r} does not start with {self.prompt!r}")
        return [caption[len(self.prompt):] for caption in captions]

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_text_length,
            padding_side="right",
            return_tensors="pt",
        )

    def _decoder_only_text(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        if any("text_output" in sample for sample in samples):
            raise ValueError("decoder-only stage-2 training takes caption samples; `text_output` is for T5")
        end = "\n" if self.newline_eos else ""
        tokens = self._tokenize([self.prompt + caption + end for caption in self._captions(samples)])
        labels = mask_padding(tokens["input_ids"], tokens["attention_mask"])
        labels[:, : self.prompt_length] = IGNORE_INDEX
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"], "labels": labels}

    def _encoder_decoder_text(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        with_output = ["text_output" in sample for sample in samples]
        if any(with_output) and not all(with_output):
            raise ValueError("either every sample has `text_output` or none does")
        if all(with_output):
            inputs = [sample["text_input"] for sample in samples]
            outputs = [sample["text_output"] for sample in samples]
        else:
            inputs = [self.prompt.rstrip()] * len(samples)
            outputs = self._captions(samples)
        encoder = self._tokenize(inputs)
        decoder = self._tokenize(outputs)
        return {
            "input_ids": encoder["input_ids"],
            "attention_mask": encoder["attention_mask"],
            "labels": mask_padding(decoder["input_ids"], decoder["attention_mask"]),
            "decoder_attention_mask": decoder["attention_mask"],
        }
