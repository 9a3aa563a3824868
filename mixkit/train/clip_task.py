"""The CLIP training task: the contrastive loss of a `transformers` `CLIPModel`, and open_clip's two recipe rules
that the shared loop asks the task for (see `mixkit.train.trainer`).

Facts from open_clip (github:mlfoundations/open_clip, commit 89fb801):
- weight decay (`src/open_clip_train/optim.py` `exclude_from_wd`: `param.ndim <= 1`, plus the models'
  `no_weight_decay()` in `src/open_clip/model.py` and `transformer.py`: the text and vision positional embeddings
  and the class embedding): no decay for biases, norm gains, `logit_scale`, the class embedding (all 1-D or 0-D)
  and the two position embeddings; token and patch embeddings and the projections are decayed;
- the logit scale starts at ln(1/0.07) and is clamped to [0, ln(100)] after every optimizer step
  (`src/open_clip/task/image_text_task.py` `clamp_logit_scale`, called in `src/open_clip_train/train.py`;
  "as in the original paper"), so the softmax temperature never drops below 1/100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPModel

from mixkit.train.contrastive import contrastive_loss

MAX_LOGIT_SCALE = math.log(100)
# The position embeddings of `transformers`' CLIP towers (2-D `nn.Embedding` weights, so the 1-D rule misses
# them): open_clip's `positional_embedding` of the text and vision towers.
NO_DECAY_SUFFIXES = ("embeddings.position_embedding.weight",)


@dataclass
class ClipBatch:
    pixel_values: torch.Tensor
    input_ids: torch.Tensor  # <|startoftext|> caption <|endoftext|>, right-padded
    attention_mask: torch.Tensor


@dataclass
class ClipLosses:
    loss: torch.Tensor
    logit_scale: torch.Tensor  # exp of the parameter, detached: the softmax's inverse temperature this step


def clip_no_decay(name: str, parameter: nn.Parameter) -> bool:
    """open_clip's rule: no weight decay for parameters of at most one dimension and for position embeddings."""
    return parameter.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES)


def clamp_logit_scale_(model: CLIPModel, maximum: float = MAX_LOGIT_SCALE) -> None:
    """Keep the logit-scale parameter in [0, `maximum`] (in place, outside autograd)."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, maximum)


@dataclass
class ClipTask:
    """CLIP's loss for a batch of image-caption pairs; the model only produces features."""

    max_logit_scale: float = MAX_LOGIT_SCALE

    def compute(self, model: CLIPModel, batch: ClipBatch) -> ClipLosses:
        outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        pixel_values=batch.pixel_values)
        scale = model.logit_scale.exp()
        # `image_embeds` / `text_embeds` are the projected features, already L2-normalised by CLIPModel.
        loss = contrastive_loss(outputs.image_embeds, outputs.text_embeds, scale)
        return ClipLosses(loss, scale.detach())

    def no_decay(self, name: str, parameter: nn.Parameter) -> bool:
        """The recipe's weight-decay exclusion (the Trainer asks the task for it)."""
        return clip_no_decay(name, parameter)

    def after_optimizer_step(self, model: CLIPModel) -> None:
        """Called by the Trainer after every update."""
        clamp_logit_scale_(model, self.max_logit_scale)
