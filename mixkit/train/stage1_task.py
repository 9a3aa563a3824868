"""Stage-1 BLIP-2 losses: image-text contrastive (ITC), matching (ITM) and image-grounded generation (ITG).

Follows LAVIS's `Blip2Qformer.forward` (facts in ../shared/REFERENCE.md): ITC features of every rank are
gathered *without* gradient, so a text feature gets gradient only from its own text-to-image row and an image
feature from its own image-to-text row, in one process or many; ITM draws one hard negative per sample from the
softmax of the similarities with positives masked out, and gathers image embeddings *with* gradient; ITG
replaces the first text token by the decoder bos ([DEC]) and uses label smoothing 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.utils.distributed import gather_with_grad, gather_without_grad  # noqa: F401 (re-exported)

POSITIVE_MASK_VALUE = -10000.0


@dataclass
class Stage1Batch:
    pixel_values: torch.Tensor
    input_ids: torch.Tensor  # [CLS] text ... (Q-Former tokenizer, right-padded)
    attention_mask: torch.Tensor
    image_ids: torch.Tensor | None = None  # same id = same image (retrieval fine-tuning)


@dataclass
class Stage1Losses:
    loss: torch.Tensor
    itc: torch.Tensor
    itm: torch.Tensor
    itg: torch.Tensor


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def positive_mask(local_size: int, total_size: int, rank: int, image_ids: torch.Tensor | None,
                  all_image_ids: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """[local, total] True where the pair is a positive: same image id, else the sample itself."""
    if image_ids is not None and all_image_ids is not None:
        return image_ids[:, None] == all_image_ids[None, :]
    mask = torch.zeros(local_size, total_size, dtype=torch.bool, device=device)
    own = torch.arange(local_size, device=device)
    mask[own, rank * local_size + own] = True
    return mask


def itc_loss(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, positives: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Symmetric cross-entropy. With image ids the targets are the positive mask normalised, mixed 0.9/0.1
    with uniform, as LAVIS does for retrieval fine-tuning; otherwise the own index with label smoothing."""
    if positives.sum(dim=1).gt(1).any():
        targets = positives.float() / positives.float().sum(dim=1, keepdim=True)
        targets = 0.9 * targets + 0.1 / targets.shape[1]
        loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(dim=1).mean()
        loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets).sum(dim=1).mean()
        return (loss_i2t + loss_t2i) / 2
    targets = positives.float().argmax(dim=1)
    return (
        F.cross_entropy(sim_i2t, targets, label_smoothing=label_smoothing)
        + F.cross_entropy(sim_t2i, targets, label_smoothing=label_smoothing)
    ) / 2


def sample_hard_negatives(similarity: torch.Tensor, positives: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row, drawn from softmax(similarity) with positives masked to -10000 (probability 0)."""
    with torch.no_grad():
        weights = F.softmax(similarity.float().masked_fill(positives, POSITIVE_MASK_VALUE), dim=1)
        return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itg_inputs(input_ids: torch.Tensor, bos_token_id: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder ids (first token -> [DEC]) and labels (pad -> -100)."""
    decoder_input_ids = input_ids.clone()
    decoder_input_ids[:, 0] = bos_token_id
    return decoder_input_ids, decoder_input_ids.masked_fill(decoder_input_ids == pad_token_id, -100)


def shifted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float,
                    reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy: position t predicts label t+1; -100 ignored; mean (or sum) over labelled tokens."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


@dataclass
class Stage1Task:
    """Computes the stage-1 loss for a batch; the model only produces outputs."""

    bos_token_id: int  # the Q-Former tokenizer's [DEC]
    pad_token_id: int
    label_smoothing: float = 0.1

    def compute(self, model: Blip2Stage1Model, batch: Stage1Batch,
                generator: torch.Generator | None = None) -> Stage1Losses:
        features = model.encode_image_features(batch.pixel_values)
        text_feats = model.text_features(batch.input_ids, batch.attention_mask)
        rank, _ = _world()
        image_feats_all = gather_without_grad(features.image_feats)
        text_feats_all = gather_without_grad(text_feats)
        image_ids_all = gather_without_grad(batch.image_ids) if batch.image_ids is not None else None
        local = batch.input_ids.shape[0]
        positives = positive_mask(local, text_feats_all.shape[0], rank, batch.image_ids, image_ids_all,
                                  text_feats.device)
        sim_i2t = model.similarity(features.image_feats, text_feats_all)
        sim_t2i = model.similarity(image_feats_all, text_feats).t()
        itc = itc_loss(sim_i2t, sim_t2i, positives, self.label_smoothing)
        itm = self._itm_loss(model, batch, features.image_embeds, sim_i2t, sim_t2i, positives, generator)
        decoder_ids, labels = itg_inputs(batch.input_ids, self.bos_token_id, self.pad_token_id)
        # shifted_lm_loss over the full logits, with the LM head (30523 words in BLIP-2) run only where a label is.
        hidden = model.itg_hidden(features.query_key_values, decoder_ids, batch.attention_mask)
        targets = labels[:, 1:]
        labelled = targets != -100
        itg_logits = model.itg_head(hidden[:, :-1][labelled])
        itg = F.cross_entropy(itg_logits.float(), targets[labelled], label_smoothing=self.label_smoothing)
        return Stage1Losses(itc + itm + itg, itc.detach(), itm.detach(), itg.detach())

    def _itm_loss(self, model: Blip2Stage1Model, batch: Stage1Batch, image_embeds: torch.Tensor,
                  sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, positives: torch.Tensor,
                  generator: torch.Generator | None) -> torch.Tensor:
        """Batch of [positives; (text, hard-negative image); (image, hard-negative text)], labels 1, 0, 0."""
        image_embeds_all = gather_with_grad(image_embeds)
        ids_all = gather_without_grad(batch.input_ids)
        mask_all = gather_without_grad(batch.attention_mask)
        negative_images = sample_hard_negatives(sim_t2i, positives, generator)
        negative_texts = sample_hard_negatives(sim_i2t, positives, generator)
        ids = torch.cat([batch.input_ids, batch.input_ids, ids_all[negative_texts]])
        mask = torch.cat([batch.attention_mask, batch.attention_mask, mask_all[negative_texts]])
        images = torch.cat([image_embeds, image_embeds_all[negative_images], image_embeds])
        logits = model.itm_logits(images, ids, mask)
        local = batch.input_ids.shape[0]
        labels = torch.cat([torch.ones(local), torch.zeros(2 * local)]).long().to(logits.device)
        return F.cross_entropy(logits, labels)
