"""BLIP's training losses: pretraining (ITC with momentum distillation + ITM with hard negatives + LM), caption
fine-tuning (LM after the prompt) and VQA fine-tuning (weighted answer LM). The model only computes outputs
(`mixkit.models.blip.modeling.BlipModel`); these tasks turn them into losses.

Facts from LAVIS (github:salesforce/LAVIS, commit 506965b), `lavis/models/blip_models/`:
- `blip_pretrain.py::forward`: `temp` is clamped to [0.001, 0.5] before every step; the momentum encoders are
  updated first, then give the ITC targets over [this batch's momentum features; the queue]:
  `alpha * softmax(sim_m) + (1 - alpha) * one-hot(own index)`, loss = soft cross-entropy, averaged over both
  directions; the queues are then filled with the momentum features. ITM: each text gets one negative image and
  each image one negative text, drawn from `softmax(sim[:, :batch]) + 1e-4` with the own pair zeroed (this
  process's batch only); texts start with `[ENC]`; labels 1 for the pairs, 0 for the 2 x batch negatives. LM:
  `[DEC]` in place of `[CLS]`, pads ignored. Total = ITC + ITM + LM. Captions are tokenized to 30 tokens.
- `lavis/models/med.py::BertLMHeadModel.forward`: every decoder loss uses label smoothing 0.1, the mean over
  labelled tokens, or with `reduction="none"` the sum per sequence.
- `blip_caption.py::forward_decoder`: `[DEC]` + prompt + caption, padded to the longest, at most 40 tokens; the
  first `len(tokenizer(prompt).input_ids) - 1` positions ([DEC] and the prompt) get no loss.
- `blip_vqa.py::forward`: the question (at most 35 tokens) is encoded with `[ENC]` first, reading the image; each
  of a question's distinct answers is decoded (`[DEC]` first) from its states with the question's padding
  masked; loss = sum over answers of weight x summed token loss, divided by the number of questions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from mixkit.models.blip.modeling import BlipModel
from mixkit.train.collators import mask_padding, stack_images
from mixkit.train.momentum import DistillationTask, FeatureQueue, MomentumCopy
from mixkit.train.stage1_task import shifted_lm_loss
from mixkit.train.stage2_task import IGNORE_INDEX
from mixkit.utils.distributed import rank_and_world

LABEL_SMOOTHING = 0.1  # med.py BertLMHeadModel
TEMP_RANGE = (0.001, 0.5)  # blip_pretrain.py: self.temp.clamp_(0.001, 0.5)
NEGATIVE_FLOOR = 1e-4  # blip_pretrain.py: softmax(...) + 1e-4 before the own pair is zeroed
# The parts a momentum copy follows (blip_pretrain.py `model_pairs`); the decoder has none.
MOMENTUM_PARTS = ("vision_model.", "text_encoder.", "vision_proj.", "text_proj.")


# ---------------------------------------------------------------- batches and losses


@dataclass
class BlipTextBatch:
    pixel_values: torch.Tensor
    input_ids: torch.Tensor  # [CLS] caption [SEP], right-padded (pretraining: to a fixed length)
    attention_mask: torch.Tensor


@dataclass
class BlipCaptionBatch:
    pixel_values: torch.Tensor
    input_ids: torch.Tensor  # [DEC] prompt caption [SEP], right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor  # input_ids with [DEC], the prompt and the padding set to -100


@dataclass
class BlipVqaBatch:
    pixel_values: torch.Tensor
    question_ids: torch.Tensor  # [ENC] question [SEP]
    question_mask: torch.Tensor
    answer_ids: torch.Tensor  # [DEC] answer [SEP], one row per distinct answer, question by question
    answer_mask: torch.Tensor
    answer_weights: torch.Tensor  # [answers] each answer's share of the annotators
    answer_counts: torch.Tensor  # [questions] how many answer rows each question has


@dataclass
class BlipPretrainLosses:
    loss: torch.Tensor
    itc: torch.Tensor
    itm: torch.Tensor
    lm: torch.Tensor
    alpha: float


@dataclass
class BlipLmLosses:
    loss: torch.Tensor


# ---------------------------------------------------------------- pretraining pieces


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum(targets * log_softmax(logits))."""
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def distillation_targets(momentum_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * softmax(momentum logits) + (1 - alpha) * one-hot on the own column (row i -> column i)."""
    hard = torch.zeros_like(momentum_logits)
    hard.fill_diagonal_(1.0)
    return alpha * F.softmax(momentum_logits, dim=1) + (1.0 - alpha) * hard


@dataclass
class ContrastiveFeatures:
    image: torch.Tensor  # online, L2-normalised [batch, dim]
    text: torch.Tensor
    image_momentum: torch.Tensor  # from the momentum encoders, no gradient
    text_momentum: torch.Tensor


def distilled_itc(features: ContrastiveFeatures, image_queue: torch.Tensor, text_queue: torch.Tensor,
                  temp: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ITC loss, sim_i2t, sim_t2i): online features against [momentum features of the batch; the queue]."""
    all_texts = torch.cat([features.text_momentum, text_queue])
    all_images = torch.cat([features.image_momentum, image_queue])
    sim_i2t = features.image @ all_texts.t() / temp
    sim_t2i = features.text @ all_images.t() / temp
    with torch.no_grad():
        targets_i2t = distillation_targets(features.image_momentum @ all_texts.t() / temp, alpha)
        targets_t2i = distillation_targets(features.text_momentum @ all_images.t() / temp, alpha)
    loss = (soft_cross_entropy(sim_i2t, targets_i2t) + soft_cross_entropy(sim_t2i, targets_t2i)) / 2
    return loss, sim_i2t, sim_t2i


def negative_weights(similarity: torch.Tensor) -> torch.Tensor:
    """Sampling weights of hard negatives within the batch [batch, batch]: softmax + 1e-4, own pair zeroed."""
    with torch.no_grad():
        weights = F.softmax(similarity.float(), dim=1) + NEGATIVE_FLOOR
        return weights.fill_diagonal_(0.0)


def draw_negatives(similarity: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row from `negative_weights` (a batch of one has no negative: an error)."""
    if similarity.shape[0] < 2:
        raise ValueError("ITM hard negatives need at least 2 samples per batch and process")
    return torch.multinomial(negative_weights(similarity), 1, generator=generator).squeeze(1)


def with_first_token(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """A copy whose first column is `token_id` ([ENC] for ITM and questions, [DEC] for the decoder)."""
    ids = input_ids.clone()
    ids[:, 0] = token_id
    return ids


def itm_loss(model: BlipModel, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             sim_i2t: torch.Tensor, sim_t2i: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """ITM over [pairs; (text, hard-negative image); (hard-negative text, image)], labels 1, 0, 0. `input_ids`
    already start with [ENC]; the similarities' first `batch` columns are this batch's."""
    batch = input_ids.shape[0]
    negative_images = draw_negatives(sim_t2i[:, :batch], generator)
    negative_texts = draw_negatives(sim_i2t[:, :batch], generator)
    images = torch.cat([image_embeds, image_embeds[negative_images], image_embeds])
    ids = torch.cat([input_ids, input_ids, input_ids[negative_texts]])
    masks = torch.cat([attention_mask, attention_mask, attention_mask[negative_texts]])
    logits = model.itm_logits(images, ids, masks)
    labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(logits.device)
    return F.cross_entropy(logits, labels)


def decoder_loss(model: BlipModel, source: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor, source_mask: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """LAVIS's decoder loss (label smoothing 0.1): the mean over labelled tokens, or ("none") the sum per row."""
    logits = model.decoder_logits(source, input_ids, attention_mask, source_mask)
    losses = shifted_lm_loss(logits, labels, LABEL_SMOOTHING, reduction=reduction)
    return losses if reduction == "mean" else losses.view(input_ids.shape[0], -1).sum(dim=1)


# ---------------------------------------------------------------- tasks


class BlipPretrainTask(DistillationTask):
    """ITC (momentum distillation, queues) + ITM (hard negatives) + LM. A module, so the momentum copy and the
    queues follow the model to its device (the Trainer's `TaskModel` holds the task) and are saved with every
    checkpoint (`DistillationTask`)."""

    def __init__(self, model: BlipModel, enc_token_id: int, bos_token_id: int, pad_token_id: int, queue_size: int,
                 momentum: float, alpha: float, samples_per_epoch: int, seed: int = 0):
        if not model.heads.contrastive or not model.heads.decoder:
            raise ValueError(f"BLIP pretraining needs every head (BlipForPreTraining), not {model.architecture}")
        super().__init__(alpha, samples_per_epoch)
        self.enc_token_id, self.bos_token_id, self.pad_token_id = enc_token_id, bos_token_id, pad_token_id
        # The retrieval layout holds exactly the followed parts (plus an ITM head and temp that stay unused).
        copy = BlipModel(model.config, "BlipForImageTextRetrieval").to(model.temp.device)
        self.momentum_model = MomentumCopy(model, copy, MOMENTUM_PARTS, momentum)
        generator = torch.Generator().manual_seed(seed)
        dim = model.config.image_text_hidden_size
        self.image_queue = FeatureQueue(queue_size, dim, generator).to(model.temp.device)
        self.text_queue = FeatureQueue(queue_size, dim, generator).to(model.temp.device)

    def compute(self, model: BlipModel, batch: BlipTextBatch,
                generator: torch.Generator | None = None) -> BlipPretrainLosses:
        with torch.no_grad():
            model.temp.clamp_(*TEMP_RANGE)
        alpha = self.current_alpha()
        image_embeds = model.encode_image(batch.pixel_values)
        features = self._features(model, batch, image_embeds)
        itc, sim_i2t, sim_t2i = distilled_itc(features, self.image_queue.features, self.text_queue.features,
                                              model.temp, alpha)
        if model.training:
            self.image_queue.push(features.image_momentum)
            self.text_queue.push(features.text_momentum)
            self.samples_seen += batch.input_ids.shape[0] * rank_and_world()[1]
        encoder_ids = with_first_token(batch.input_ids, self.enc_token_id)
        itm = itm_loss(model, image_embeds, encoder_ids, batch.attention_mask, sim_i2t, sim_t2i, generator)
        decoder_ids = with_first_token(batch.input_ids, self.bos_token_id)
        labels = decoder_ids.masked_fill(decoder_ids == self.pad_token_id, IGNORE_INDEX)
        lm = decoder_loss(model, image_embeds, decoder_ids, batch.attention_mask, labels)
        return BlipPretrainLosses(itc + itm + lm, itc.detach(), itm.detach(), lm.detach(), alpha)

    def _features(self, model: BlipModel, batch: BlipTextBatch, image_embeds: torch.Tensor) -> ContrastiveFeatures:
        image = model.image_features(image_embeds)
        text = model.text_features(batch.input_ids, batch.attention_mask)
        with torch.no_grad():
            self.update_momentum_in_forward(model)
            follower = self.momentum_model.model
            image_momentum = follower.image_features(follower.encode_image(batch.pixel_values))
            text_momentum = follower.text_features(batch.input_ids, batch.attention_mask)
        return ContrastiveFeatures(image, text, image_momentum, text_momentum)


@dataclass
class BlipCaptionTask:
    """Caption fine-tuning: the LM loss of the caption tokens after [DEC] and the prompt."""

    def compute(self, model: BlipModel, batch: BlipCaptionBatch) -> BlipLmLosses:
        image_embeds = model.encode_image(batch.pixel_values)
        return BlipLmLosses(decoder_loss(model, image_embeds, batch.input_ids, batch.attention_mask, batch.labels))


@dataclass
class BlipVqaTask:
    """VQA fine-tuning: every distinct answer decoded from its question's states, weighted by its share."""

    def compute(self, model: BlipModel, batch: BlipVqaBatch) -> BlipLmLosses:
        image_embeds = model.encode_image(batch.pixel_values)
        states = model.multimodal_hidden(image_embeds, batch.question_ids, batch.question_mask)
        counts = batch.answer_counts
        labels = mask_padding(batch.answer_ids, batch.answer_mask)
        per_answer = decoder_loss(model, states.repeat_interleave(counts, 0), batch.answer_ids, batch.answer_mask,
                                  labels, batch.question_mask.repeat_interleave(counts, 0), reduction="none")
        return BlipLmLosses((batch.answer_weights * per_answer).sum() / batch.question_ids.shape[0])


# ---------------------------------------------------------------- collators (all tokenization happens here)

Sample = Mapping[str, Any]


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int | None,
              padding: str = "longest") -> dict[str, torch.Tensor]:
    return tokenizer(list(texts), padding=padding, truncation=max_length is not None, max_length=max_length,
                     padding_side="right", return_tensors="pt")


@dataclass
class BlipCaptionCollator:
    """Caption samples -> `BlipCaptionBatch` fields, as `blip_caption.py::forward_decoder` builds them."""

    tokenizer: PreTrainedTokenizerBase
    bos_token_id: int  # [DEC]
    prompt: str = "a picture of "
    max_text_length: int = 40

    @property
    def prompt_length(self) -> int:
        """LAVIS's count: the tokens of `[CLS] prompt [SEP]` minus one, i.e. [DEC] + the prompt."""
        return len(self.tokenizer(self.prompt)["input_ids"]) - 1

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        tokens = _tokenize(self.tokenizer, [self.prompt + sample["text_input"] for sample in samples],
                           self.max_text_length)
        input_ids = with_first_token(tokens["input_ids"], self.bos_token_id)
        labels = mask_padding(input_ids, tokens["attention_mask"])
        labels[:, : self.prompt_length] = IGNORE_INDEX
        return {"pixel_values": stack_images(samples), "input_ids": input_ids,
                "attention_mask": tokens["attention_mask"], "labels": labels}


@dataclass
class BlipVqaCollator:
    """VQA samples (`text_input`, `answers`, `weights`) -> `BlipVqaBatch` fields, as `blip_vqa.py::forward`."""

    tokenizer: PreTrainedTokenizerBase
    enc_token_id: int
    bos_token_id: int
    max_question_length: int = 35

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        for sample in samples:
            if not sample.get("answers") or len(sample["answers"]) != len(sample.get("weights", ())):
                raise ValueError(f"VQA training samples need `answers` and as many `weights` (question id "
                                 f"{sample.get('question_id', '?')}); load the records with task='vqa'")
        questions = _tokenize(self.tokenizer, [sample["text_input"] for sample in samples], self.max_question_length)
        answers = _tokenize(self.tokenizer, [answer for sample in samples for answer in sample["answers"]], None)
        return {
            "pixel_values": stack_images(samples),
            "question_ids": with_first_token(questions["input_ids"], self.enc_token_id),
            "question_mask": questions["attention_mask"],
            "answer_ids": with_first_token(answers["input_ids"], self.bos_token_id),
            "answer_mask": answers["attention_mask"],
            "answer_weights": torch.tensor([w for sample in samples for w in sample["weights"]], dtype=torch.float),
            "answer_counts": torch.tensor([len(sample["answers"]) for sample in samples]),
        }


__all__ = ["BlipCaptionBatch", "BlipCaptionCollator", "BlipCaptionTask", "BlipLmLosses", "BlipPretrainLosses",
           "BlipPretrainTask", "BlipTextBatch", "BlipVqaBatch", "BlipVqaCollator", "BlipVqaTask",
           "ContrastiveFeatures", "distilled_itc", "distillation_targets", "itm_loss", "negative_weights"]
