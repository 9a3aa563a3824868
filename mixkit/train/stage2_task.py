"""Stage-2 BLIP-2 loss: language modelling of the text given the projected queries.

Follows LAVIS's `Blip2OPT.forward` and `Blip2T5.forward` (facts in ../shared/REFERENCE.md). The labels come from
`mixkit.train.collators.Stage2Collator`; the model only produces logits.

- Decoder-only (OPT): the logits cover [queries; text]; the query positions get label -100 and the loss is the
  next-token cross-entropy, mean over the labelled tokens, without label smoothing (LAVIS passes `labels=` to
  `OPTForCausalLM`, which does exactly this).
- Encoder-decoder (Flan-T5): the queries and the prompt feed the encoder; the decoder reads the labels shifted
  right behind `decoder_start_token_id` (-100 -> pad) and the loss is the cross-entropy of its logits against the
  unshifted labels, as `T5ForConditionalGeneration(labels=...)` computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from mixkit.models.blip2.modeling import Blip2Model
from mixkit.train.stage1_task import shifted_lm_loss

IGNORE_INDEX = -100


@dataclass
class Stage2Batch:
    pixel_values: torch.Tensor
    # Decoder-only: the whole text (prompt + caption + "\n"), right-padded. Encoder-decoder: the encoder prompt.
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    # Decoder-only: aligned with `input_ids`. Encoder-decoder: the decoder targets. -100 = no loss.
    labels: torch.Tensor
    decoder_attention_mask: torch.Tensor | None = None  # encoder-decoder only


@dataclass
class Stage2Losses:
    loss: torch.Tensor


def prepend_ignored(labels: torch.Tensor, count: int) -> torch.Tensor:
    """`count` columns of -100 in front: the query positions carry no target."""
    ignored = labels.new_full((labels.shape[0], count), IGNORE_INDEX)
    return torch.cat([ignored, labels], dim=1)


def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: [start, labels[:-1]] with -100 replaced by the pad id."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


def seq2seq_lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float,
                    reduction: str = "mean") -> torch.Tensor:
    """Decoder logits at position t score label t (no shift: the inputs were shifted instead); -100 ignored."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def _required_id(value: int | None, name: str) -> int:
    if value is None:
        raise ValueError(f"the language model's config has no {name}; stage-2 encoder-decoder training needs it")
    return value


@dataclass
class Stage2Task:
    """Computes the stage-2 language-modelling loss for a batch; the model only produces logits."""

    label_smoothing: float = 0.0  # LAVIS uses none in stage 2
    # The loss is a mean over labelled tokens, so `Blip2Trainer` passes the step's token count (`num_items_in_batch`)
    # and gets the sum over this batch's tokens divided by it: see `compute`.
    counts_label_tokens: ClassVar[bool] = True

    def compute(self, model: Blip2Model, batch: Stage2Batch,
                num_items_in_batch: int | torch.Tensor | None = None) -> Stage2Losses:
        """Mean over this batch's labelled tokens; with `num_items_in_batch` (labelled tokens of the whole
        optimisation step: every process and accumulation micro-batch), the sum over this batch's tokens divided
        by that count, so micro-batches add up to the step's mean, whatever the split across processes."""
        reduction = "mean" if num_items_in_batch is None else "sum"
        if model.is_encoder_decoder:
            loss = self._encoder_decoder_loss(model, batch, reduction)
        else:
            loss = self._decoder_only_loss(model, batch, reduction)
        return Stage2Losses(loss if num_items_in_batch is None else loss / num_items_in_batch)

    def _decoder_only_loss(self, model: Blip2Model, batch: Stage2Batch, reduction: str) -> torch.Tensor:
        if not model.has_plain_output_head:
            output = model(batch.pixel_values, batch.input_ids, batch.attention_mask)
            labels = prepend_ignored(batch.labels, output.num_query_positions)
            return shifted_lm_loss(output.logits, labels, self.label_smoothing, reduction)
        # The same loss with the output head on the labelled positions only (1.1x a stage-2 step on CPU,
        # benchmarks/RESULTS.md). Gathered into one contiguous tensor first: a strided view is slower.
        hidden = model.decoder_hidden_states(batch.pixel_values, batch.input_ids, batch.attention_mask)
        targets = prepend_ignored(batch.labels, hidden.num_query_positions)[:, 1:]
        labelled = targets != IGNORE_INDEX
        logits = model.output_logits(hidden.logits[:, :-1][labelled])
        return F.cross_entropy(logits.float(), targets[labelled], label_smoothing=self.label_smoothing,
                               reduction=reduction)

    def _encoder_decoder_loss(self, model: Blip2Model, batch: Stage2Batch, reduction: str) -> torch.Tensor:
        text_config = model.config.text_config
        decoder_input_ids = shift_right(
            batch.labels,
            _required_id(text_config.decoder_start_token_id, "decoder_start_token_id"),
            _required_id(text_config.pad_token_id, "pad_token_id"),
        )
        output = model(
            batch.pixel_values,
            batch.input_ids,
            batch.attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=batch.decoder_attention_mask,
        )
        return seq2seq_lm_loss(output.logits, batch.labels, self.label_smoothing, reduction)
