"""ALBEF's training losses: ITC with momentum distillation and feature queues, ITM with hard negatives, and (for
pretraining) MLM distilled from the momentum model. The model only computes outputs
(`mixkit.models.albef.modeling.AlbefModel`); the momentum copy and the queues are training state held here
(`mixkit.train.momentum`, shared with BLIP's pretraining).

Facts from LAVIS (github:salesforce/LAVIS, commit 506965b), `lavis/models/albef_models/albef_retrieval.py` and
`albef_pretrain.py`, `forward`:
- `temp` is a trained parameter clamped in place to [0.001, 0.5] at the start of every forward;
- `alpha * min(1, (epoch * n + i) / (2n))` is the distillation weight (`_rampup_factor`; here counted in samples,
  `mixkit.train.momentum.ramped_alpha`, which gives the same value at every step);
- the momentum update runs inside every forward, before the momentum features are computed; the momentum model
  follows the ViT, the text encoder (with the MLM head in pretraining: `BertForMaskedLM`) and both projections;
- ITC: the online features are compared with [this batch's *momentum* features; the queue] (the batch columns are
  momentum features, not online ones); targets `alpha * softmax(momentum sims) + (1 - alpha) * positives`, where
  positives are the same-image pairs over the batch and the id queue, normalised per row (retrieval,
  `pos_idx / pos_idx.sum(1)`), or the own pair alone (pretraining: `fill_diagonal_(1)`); the loss is the mean of
  both directions' soft cross-entropy; the queues (features and ids) are filled after the loss;
- ITM: text features come from the text-only layers ("text" mode); each text gets one negative image and each
  image one negative text drawn from the softmax of this batch's similarities with the positives excluded
  (retrieval zeroes them after the softmax, pretraining puts -inf before it: the same distribution); the fusion
  layers read rows [positive pairs; (text, negative image); (negative text, image)], labels [1] * B + [0] * 2B;
  ITM texts keep `[CLS]` first;
- MLM (`albef_pretrain.py::mask`, `med.py::BertForMaskedLM.forward`): 15% of the tokens (never padding or
  `[CLS]`) are chosen; of those 80% become `[MASK]`, 10% a random token, 10% stay; the loss is
  `(1 - alpha) * cross-entropy + alpha * soft cross-entropy against the momentum model's softmax`, both averaged
  over the chosen tokens; the momentum model reads its own image features. Total = ITC + ITM (+ MLM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from mixkit.models.albef.modeling import AlbefModel
from mixkit.train.blip_task import ContrastiveFeatures, soft_cross_entropy
from mixkit.train.collators import stack_images
from mixkit.train.momentum import DistillationTask, FeatureQueue, MomentumCopy
from mixkit.train.stage2_task import IGNORE_INDEX
from mixkit.utils.distributed import gather_without_grad, rank_and_world

TEMP_RANGE = (0.001, 0.5)  # albef_retrieval.py / albef_pretrain.py: self.temp.clamp_(0.001, 0.5)
MOMENTUM_PARTS = ("vision_model.", "text_encoder.", "vision_proj.", "text_proj.")  # LAVIS `model_pairs`
EMPTY_ID = -100  # albef_retrieval.py: idx_queue starts as torch.full(..., -100)
MLM_PROBABILITY = 0.15  # albef_pretrain_base.yaml mlm_mask_prob


@dataclass
class AlbefBatch:
    pixel_values: torch.Tensor
    input_ids: torch.Tensor  # [CLS] caption [SEP], right-padded to a fixed length
    attention_mask: torch.Tensor
    image_ids: torch.Tensor | None = None  # retrieval: captions of one image are all positives
    mlm_input_ids: torch.Tensor | None = None  # pretraining: input_ids with the chosen tokens masked
    mlm_labels: torch.Tensor | None = None  # the chosen tokens' original ids, -100 elsewhere


@dataclass
class AlbefLosses:
    loss: torch.Tensor
    itc: torch.Tensor
    itm: torch.Tensor
    mlm: torch.Tensor  # 0 when the batch has no MLM inputs (retrieval)
    alpha: float
    negative_images: torch.Tensor  # [B] the image drawn for each text (for inspection)
    negative_texts: torch.Tensor  # [B] the text drawn for each image


class IdQueue(nn.Module):
    """The image ids of the queued features (a ring buffer beside `FeatureQueue`, advanced with it)."""

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("ids", torch.full((size,), EMPTY_ID, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, local_ids: torch.Tensor) -> None:
        rows = gather_without_grad(local_ids)
        index = (self.pointer + torch.arange(rows.shape[0], device=rows.device)) % self.ids.shape[0]
        self.ids[index] = rows.to(self.ids.dtype)
        self.pointer.copy_((self.pointer + rows.shape[0]) % self.ids.shape[0])


# ---------------------------------------------------------------- the three losses


def positive_pairs(batch: int, queue_size: int, image_ids: torch.Tensor | None,
                   queued_ids: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """[batch, batch + queue] True where column j shows the row's image: same id (batch and id queue), or only
    the own pair when there are no ids."""
    if image_ids is None or queued_ids is None:
        positives = torch.zeros(batch, batch + queue_size, dtype=torch.bool, device=device)
        positives[:, :batch].fill_diagonal_(True)
        return positives
    return image_ids[:, None] == torch.cat([image_ids, queued_ids])[None, :]


def distilled_itc(features: ContrastiveFeatures, image_queue: torch.Tensor, text_queue: torch.Tensor,
                  temp: torch.Tensor, alpha: float,
                  positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ITC loss, sim_i2t, sim_t2i): online features against [momentum features of the batch; the queue]."""
    all_texts = torch.cat([features.text_momentum, text_queue])
    all_images = torch.cat([features.image_momentum, image_queue])
    sim_i2t = features.image @ all_texts.t() / temp
    sim_t2i = features.text @ all_images.t() / temp
    with torch.no_grad():
        hard = positives.float() / positives.sum(dim=1, keepdim=True)
        targets_i2t = alpha * F.softmax(features.image_momentum @ all_texts.t() / temp, dim=1) + (1 - alpha) * hard
        targets_t2i = alpha * F.softmax(features.text_momentum @ all_images.t() / temp, dim=1) + (1 - alpha) * hard
    loss = (soft_cross_entropy(sim_i2t, targets_i2t) + soft_cross_entropy(sim_t2i, targets_t2i)) / 2
    return loss, sim_i2t, sim_t2i


def negative_weights(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """[B, B] sampling weights of hard negatives: softmax of the similarities, positives zeroed."""
    with torch.no_grad():
        weights = F.softmax(similarity.float(), dim=1).masked_fill(positives, 0.0)
    if not bool((weights.sum(dim=1) > 0).all()):
        raise ValueError("ITM hard negatives: a sample has no negative in its batch (every caption shows the same "
                         "image); use larger or more varied batches")
    return weights


def draw_negatives(similarity: torch.Tensor, positives: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    weights = negative_weights(similarity, positives)
    if generator is not None and generator.device != weights.device:
        weights = weights.to(generator.device)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1).to(similarity.device)


def hard_negative_itm(model: AlbefModel, image_embeds: torch.Tensor, text_states: torch.Tensor,
                      attention_mask: torch.Tensor, sim_i2t: torch.Tensor, sim_t2i: torch.Tensor,
                      positives: torch.Tensor, generator: torch.Generator | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ITM loss, negative image per text, negative text per image); similarities and positives [B, B]."""
    batch = text_states.shape[0]
    negative_images = draw_negatives(sim_t2i, positives, generator)
    negative_texts = draw_negatives(sim_i2t, positives, generator)
    texts = torch.cat([text_states, text_states, text_states[negative_texts]])
    masks = torch.cat([attention_mask, attention_mask, attention_mask[negative_texts]])
    images = torch.cat([image_embeds, image_embeds[negative_images], image_embeds])
    logits = model.itm_head(model.fused_cls(texts, masks, images))
    labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(logits.device)
    return F.cross_entropy(logits, labels), negative_images, negative_texts


def distilled_mlm(logits: torch.Tensor, momentum_logits: torch.Tensor, labels: torch.Tensor,
                  alpha: float) -> torch.Tensor:
    """(1 - alpha) * CE over the chosen tokens + alpha * soft CE against softmax(momentum logits) there."""
    chosen = labels != IGNORE_INDEX
    if not bool(chosen.any()):
        return logits.sum() * 0.0  # no token chosen in this batch: nothing to learn, keep the graph
    picked = logits[chosen].float()
    hard = F.cross_entropy(picked, labels[chosen])
    soft = soft_cross_entropy(picked, F.softmax(momentum_logits[chosen].float(), dim=-1))
    return (1 - alpha) * hard + alpha * soft


# ---------------------------------------------------------------- the task


class AlbefTask(DistillationTask):
    """ITC (momentum distillation, queues) + ITM (hard negatives) + MLM when the batch brings masked inputs.
    A module, so the momentum copy and the queues follow the model to its device (the Trainer's `TaskModel`
    holds the task) and are saved with every checkpoint (`DistillationTask`)."""

    def __init__(self, model: AlbefModel, queue_size: int, momentum: float, alpha: float, samples_per_epoch: int,
                 use_image_ids: bool, seed: int = 0):
        if not model.heads.contrastive:
            raise ValueError(f"ALBEF ITC/ITM training needs the contrastive heads, not {model.architecture}")
        super().__init__(alpha, samples_per_epoch)
        self.mlm = hasattr(model, "mlm_head")
        parts = MOMENTUM_PARTS + (("mlm_head.",) if self.mlm else ())
        device = model.temp.device
        self.momentum_model = MomentumCopy(model, AlbefModel(model.config, model.architecture).to(device), parts,
                                           momentum)
        generator = torch.Generator().manual_seed(seed)
        dim = model.config.image_text_hidden_size
        self.image_queue = FeatureQueue(queue_size, dim, generator).to(device)
        self.text_queue = FeatureQueue(queue_size, dim, generator).to(device)
        self.id_queue = IdQueue(queue_size).to(device) if use_image_ids else None

    def compute(self, model: AlbefModel, batch: AlbefBatch, generator: torch.Generator | None = None) -> AlbefLosses:
        with torch.no_grad():
            model.temp.clamp_(*TEMP_RANGE)
        alpha = self.current_alpha()
        size = batch.input_ids.shape[0]
        image_embeds = model.encode_image(batch.pixel_values)
        text_states = model.text_states(batch.input_ids, batch.attention_mask)
        features, image_embeds_m = self._features(model, batch, image_embeds, text_states)
        ids = batch.image_ids if self.id_queue is not None else None
        positives = positive_pairs(size, self.image_queue.size, ids,
                                   self.id_queue.ids if self.id_queue is not None else None, image_embeds.device)
        itc, sim_i2t, sim_t2i = distilled_itc(features, self.image_queue.features, self.text_queue.features,
                                              model.temp, alpha, positives)
        if model.training:
            self._enqueue(features, ids, size)
        itm, negative_images, negative_texts = hard_negative_itm(
            model, image_embeds, text_states, batch.attention_mask, sim_i2t[:, :size], sim_t2i[:, :size],
            positives[:, :size], generator)
        mlm = self._mlm(model, batch, image_embeds, image_embeds_m, alpha)
        return AlbefLosses(itc + itm + mlm, itc.detach(), itm.detach(), mlm.detach(), alpha, negative_images,
                           negative_texts)

    def _features(self, model: AlbefModel, batch: AlbefBatch, image_embeds: torch.Tensor,
                  text_states: torch.Tensor) -> tuple[ContrastiveFeatures, torch.Tensor]:
        image, text = model.image_features(image_embeds), model.project_text(text_states)
        with torch.no_grad():
            self.update_momentum_in_forward(model)
            follower = self.momentum_model.model
            image_embeds_m = follower.encode_image(batch.pixel_values)
            image_m = follower.image_features(image_embeds_m)
            text_m = follower.text_features(batch.input_ids, batch.attention_mask)
        return ContrastiveFeatures(image, text, image_m, text_m), image_embeds_m

    def _enqueue(self, features: ContrastiveFeatures, ids: torch.Tensor | None, size: int) -> None:
        self.image_queue.push(features.image_momentum)
        self.text_queue.push(features.text_momentum)
        if self.id_queue is not None:
            if ids is None:
                raise ValueError("albef retrieval training needs image ids in every batch (AlbefCollator "
                                 "use_image_ids=True)")
            self.id_queue.push(ids)
        self.samples_seen += size * rank_and_world()[1]

    def _mlm(self, model: AlbefModel, batch: AlbefBatch, image_embeds: torch.Tensor,
             image_embeds_m: torch.Tensor, alpha: float) -> torch.Tensor:
        if batch.mlm_input_ids is None or batch.mlm_labels is None:
            return image_embeds.new_zeros(())
        if not self.mlm:
            raise ValueError(f"MLM inputs given, but {model.architecture} has no MLM head (AlbefForPreTraining)")
        logits = model.mlm_logits(image_embeds, batch.mlm_input_ids, batch.attention_mask)
        with torch.no_grad():
            logits_m = self.momentum_model.model.mlm_logits(image_embeds_m, batch.mlm_input_ids, batch.attention_mask)
        return distilled_mlm(logits, logits_m, batch.mlm_labels, alpha)


# ---------------------------------------------------------------- collator (all tokenization happens here)


def mask_tokens(input_ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase, probability: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels) as `albef_pretrain.py::mask`: chosen with `probability` (never padding or [CLS]);
    80% of the chosen become [MASK], half the rest a random token, the others stay; labels -100 elsewhere."""
    if tokenizer.mask_token_id is None:
        raise ValueError("MLM needs a tokenizer with a [MASK] token")
    ids, shape = input_ids.clone(), input_ids.shape
    chosen = torch.bernoulli(torch.full(shape, probability), generator=generator).bool()
    chosen &= (ids != tokenizer.pad_token_id) & (ids != tokenizer.cls_token_id)
    labels = ids.masked_fill(~chosen, IGNORE_INDEX)
    to_mask = torch.bernoulli(torch.full(shape, 0.8), generator=generator).bool() & chosen
    ids[to_mask] = tokenizer.mask_token_id
    to_random = torch.bernoulli(torch.full(shape, 0.5), generator=generator).bool() & chosen & ~to_mask
    random_ids = torch.randint(len(tokenizer), shape, generator=generator)
    ids[to_random] = random_ids[to_random]
    return ids, labels


@dataclass
class AlbefCollator:
    """Caption samples -> `AlbefBatch` fields: [CLS] caption [SEP] padded to `max_text_length` (LAVIS pads to
    `max_txt_len` 30), the image ids (retrieval) and the MLM inputs (pretraining)."""

    tokenizer: PreTrainedTokenizerBase
    max_text_length: int = 30
    use_image_ids: bool = False
    mlm_probability: float | None = None  # None: no MLM inputs
    seed: int = 0

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer([sample["text_input"] for sample in samples], padding="max_length", truncation=True,
                                max_length=self.max_text_length, padding_side="right", return_tensors="pt")
        batch = {"pixel_values": stack_images(samples), "input_ids": tokens["input_ids"],
                 "attention_mask": tokens["attention_mask"]}
        if self.use_image_ids:
            batch["image_ids"] = torch.tensor([int(sample["image_id"]) for sample in samples])
        if self.mlm_probability is not None:
            batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens(tokens["input_ids"], self.tokenizer,
                                                                      self.mlm_probability, self.generator)
        return batch


__all__ = ["AlbefBatch", "AlbefCollator", "AlbefLosses", "AlbefTask", "IdQueue", "distilled_itc", "distilled_mlm",
           "hard_negative_itm", "mask_tokens", "negative_weights", "positive_pairs"]
