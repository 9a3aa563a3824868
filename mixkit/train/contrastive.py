"""CLIP's symmetric contrastive loss over every process's batch, as open_clip computes it.

Facts from open_clip (github:mlfoundations/open_clip, commit 89fb801, `src/open_clip/loss.py`: `ClipLoss` with
`local_loss=True`, `gather_features(..., gather_with_grad=True)`):
- each process gathers the image and text features of every process *with* gradient (the all-gather's backward
  sums every process's gradient into the owner's slice);
- it scores only its own rows: its images against all texts and its texts against all images, targets
  `arange(local) + rank * local`, loss = (CE(image->text) + CE(text->image)) / 2.

Why this gives the same training as one process at the whole batch: the whole batch's loss is the mean of the
processes' losses (every process has the same number of rows), each process's backward reaches its own features
through its rows and everyone else's features through the gather, and DDP averages the parameter gradients over
processes -- together exactly the gradient of the mean. `tests/train/test_clip_contrastive.py` checks it on 2
processes (gloo) against 1 process at double batch, gradients included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixkit.utils.distributed import gather_with_grad, rank_and_world


def local_logits(image_feats: torch.Tensor, text_feats: torch.Tensor,
                 logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's rows, [local, global] each: its images against every text, its texts against every image.
    Features are L2-normalised [local, dim]; `logit_scale` is the multiplier itself (exp of the parameter)."""
    all_image_feats = gather_with_grad(image_feats)
    all_text_feats = gather_with_grad(text_feats)
    return logit_scale * image_feats @ all_text_feats.T, logit_scale * text_feats @ all_image_feats.T


def contrastive_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of this process's rows; sample i's positive is column `rank * local + i`. Every process
    must pass the same number of rows (the gather needs equal shapes)."""
    if image_feats.shape != text_feats.shape:
        raise ValueError(f"image features {tuple(image_feats.shape)} and text features "
                         f"{tuple(text_feats.shape)} must pair up row by row")
    rank, _ = rank_and_world()
    logits_per_image, logits_per_text = local_logits(image_feats, text_feats, logit_scale)
    local = image_feats.shape[0]
    targets = torch.arange(local, device=image_feats.device) + rank * local
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2
