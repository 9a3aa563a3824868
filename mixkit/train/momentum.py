"""Momentum encoders and feature queues: the training state of contrastive learning with momentum distillation
(BLIP pretraining, ALBEF). The model computes outputs; these hold the extra state a task keeps beside it.

Facts from LAVIS (github:salesforce/LAVIS, commit 506965b):
- `lavis/models/base_model.py` `MomentumDistilationMixin`: the momentum copies start as copies of the online
  parts, never get gradients (`requires_grad = False`), and after every update follow them by an exponential
  moving average `p_m = momentum * p_m + (1 - momentum) * p`; BLIP and ALBEF call it at the start of each forward.
- `SharedQueueMixin._dequeue_and_enqueue`: the momentum features of every process are gathered (no gradient),
  written at the queue pointer, and the pointer advances modulo the queue size. LAVIS asserts that the queue size
  is a multiple of the global batch; here the write wraps around instead, so a last smaller batch is accepted.
- `blip_pretrain.py` / `albef_pretrain.py`: the queues start as random normal features, L2-normalised; LAVIS stores
  them [dim, size], here they are rows [size, dim]. The distillation weight `alpha` ramps linearly from 0 over the
  first two epochs (`_rampup_factor`: min(1, (epoch * iters_per_epoch + iters) / (2 * iters_per_epoch))).

The options (`--queue_size`, `--momentum`, `--alpha`) are fields of `mixkit.train.arguments.ModelArguments`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixkit.utils.distributed import gather_without_grad

ALPHA_RAMP_EPOCHS = 2  # LAVIS `_rampup_factor`


class MomentumCopy(nn.Module):
    """A frozen copy of the parameters of `source` whose names start with `prefixes`, kept as `self.model` (a module
    of the same class, or any module with those parameter names, so the model's own methods run on it)."""

    def __init__(self, source: nn.Module, copy: nn.Module, prefixes: tuple[str, ...], momentum: float):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.model = copy
        self.prefixes = prefixes
        self.momentum = momentum
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.names = self._paired_names(source)
        self.copy_from(source)

    def _paired_names(self, source: nn.Module) -> list[str]:
        """Every parameter under `prefixes`, checked to exist with the same shape on both sides."""
        own, theirs = dict(self.model.named_parameters()), dict(source.named_parameters())
        names = [name for name in own if name.startswith(self.prefixes)]
        bad = [name for name in names if name not in theirs or theirs[name].shape != own[name].shape]
        if bad or not names:
            raise ValueError(f"momentum copy: parameters {bad or list(self.prefixes)} have no counterpart of the same "
                             "shape in the online model")
        return names

    def _pairs(self, source: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        own, theirs = dict(self.model.named_parameters()), dict(source.named_parameters())
        return [(theirs[name], own[name]) for name in self.names]

    @torch.no_grad()
    def copy_from(self, source: nn.Module) -> None:
        for online, follower in self._pairs(source):
            follower.copy_(online)

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        """One EMA step towards the online parameters."""
        for online, follower in self._pairs(source):
            follower.mul_(self.momentum).add_(online.detach().to(follower.dtype), alpha=1.0 - self.momentum)


class FeatureQueue(nn.Module):
    """A ring buffer of L2-normalised features [size, dim] filled with every process's momentum features."""

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("features", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def push(self, local_features: torch.Tensor) -> None:
        """Gather every process's rows (no gradient) and write them at the pointer, wrapping around."""
        rows = gather_without_grad(local_features)
        if rows.shape[0] > self.size:
            raise ValueError(f"a global batch of {rows.shape[0]} does not fit a feature queue of {self.size}")
        index = (self.pointer + torch.arange(rows.shape[0], device=rows.device)) % self.size
        self.features[index] = rows.to(self.features.dtype)
        self.pointer.copy_((self.pointer + rows.shape[0]) % self.size)


def ramped_alpha(alpha: float, samples_seen: int, samples_per_epoch: int,
                 ramp_epochs: int = ALPHA_RAMP_EPOCHS) -> float:
    """LAVIS's distillation weight: `alpha` times the fraction of the ramp (in samples, all processes) done
    before this batch. Counting samples instead of (epoch, iteration) gives LAVIS's value at every step."""
    if samples_per_epoch <= 0:
        return alpha
    return alpha * min(1.0, samples_seen / (ramp_epochs * samples_per_epoch))


class DistillationTask(nn.Module):
    """What BLIP's and ALBEF's pretraining tasks share: the ramped distillation weight, and training state that
    checkpoints carry. Being a module, its momentum copy and queues are in `state_dict()`, and the samples seen
    so far (the ramp's position) are its `_extra_state`, so the Trainer writes the whole state beside each
    checkpoint's weights and a resumed run continues the same queues, copies and ramp
    (`mixkit.train.trainer.TASK_STATE_FILE`)."""

    momentum_model: MomentumCopy

    def __init__(self, alpha: float, samples_per_epoch: int):
        super().__init__()
        self.alpha, self.samples_per_epoch, self.samples_seen = alpha, samples_per_epoch, 0
        self.momentum_outside_forward = False  # see `update_before_forward`

    def current_alpha(self) -> float:
        return ramped_alpha(self.alpha, self.samples_seen, self.samples_per_epoch)

    def update_momentum_in_forward(self, model: nn.Module) -> None:
        """LAVIS's EMA step at the start of each training forward (unless the Trainer makes it just before)."""
        if model.training and not self.momentum_outside_forward:
            self.momentum_model.update(model)

    def update_before_forward(self, model: nn.Module) -> None:
        """The same EMA step, called by the Trainer just before each training forward instead of inside it.
        Needed under FSDP2: inside the forward, parameters outside the layer blocks are gathered copies, so an
        update written there would be lost when they are resharded; between forwards both sides are shards."""
        self.momentum_outside_forward = True
        if model.training:
            self.momentum_model.update(model)

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(self.samples_seen, dtype=torch.long)

    def set_extra_state(self, state: torch.Tensor) -> None:
        # torch's distributed state-dict loader passes a placeholder object here (it loads tensors only); the
        # Trainer then sets the saved value itself.
        if isinstance(state, torch.Tensor):
            self.samples_seen = int(state)


__all__ = ["ALPHA_RAMP_EPOCHS", "DistillationTask", "FeatureQueue", "MomentumCopy", "ramped_alpha"]
