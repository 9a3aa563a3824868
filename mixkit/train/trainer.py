"""One training loop for every BLIP-2 stage: a thin `transformers.Trainer` whose loss comes from a task object.

What the subclass changes, and why:
- `compute_loss` asks the stage's task (`Stage1Task` / `Stage2Task`) for the loss; a non-finite loss skips the
  step's update (zero gradient) and logs the batch's image ids instead of poisoning the weights.
- the schedule is linear warm-up then cosine down to `eta_min` (PaddleMIX/LAVIS), the optimizer AdamW with no
  decay on biases, norms and 1-D parameters (LAVIS's rule, or the task's own `no_decay`), over trainable
  parameters only; a task with `after_optimizer_step(model)` gets it called after every update (CLIP's clamp);
- a sharded stream (`--train_shards`) splits itself by rank and worker, so it gets a plain per-rank DataLoader
  instead of accelerate's (see `get_train_dataloader`);
- checkpoints hold the trainable weights and name their base model, and get a completion marker written last,
  so a crash mid-save never leaves a checkpoint that looks complete (`last_complete_checkpoint`); a task with
  training state of its own (BLIP's and ALBEF's momentum copies, queues and distillation ramp) writes it beside
  them (`TASK_STATE_FILE`) and gets it back on resume; under FSDP2 its momentum EMA runs just before each
  forward instead of inside it (`DistillationTask.update_before_forward`);
- `--sharding_parallel_degree N` shards the model with torch's FSDP2 right after `Trainer.__init__` (see
  `mixkit.train.fsdp`); checkpoints then gather full weights and optimizer state, the same files as DDP writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from mixkit.utils.versions import library_versions
from mixkit.data.bad_images import BadImageBudget
from mixkit.data.shards.stream import ShardedRecords, shard_loader
from mixkit.models.blip2.modeling import Blip2Base
from mixkit.models.serialization import CheckpointMismatchError, load_weights_strict, read_weights, tied_groups
from mixkit.train import fsdp
from mixkit.train.momentum import DistillationTask
from mixkit.train.progress import TrainingProgress

logger = logging.getLogger(__name__)
COMPLETE_MARKER = "mixkit_complete.json"
TASK_STATE_FILE = "task_state.safetensors"  # a task's training state beside a checkpoint's weights


def task_training_state(task: Any, gather: bool = True) -> dict[str, torch.Tensor]:
    """A task module's state dict (empty for tasks without state) as full CPU tensors, each its own storage
    (safetensors refuses shared ones). `gather=False` only looks: no collective, no copies."""
    if not isinstance(task, nn.Module):
        return {}
    state = task.state_dict()
    if not gather:
        return state
    return {name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().cpu().clone().contiguous()
            for name, value in state.items()}


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, floor_ratio: float) -> float:
    """Learning-rate multiplier: 0 -> 1 linearly over `warmup_steps`, then cosine from 1 to `floor_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor_ratio + (1.0 - floor_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_step_decay_factor(step: int, warmup_steps: int, steps_per_epoch: int, decay_rate: float,
                             floor_ratio: float) -> float:
    """LAVIS's `linear_warmup_step_lr` (lavis/common/optims.py, commit 506965b) as a multiplier: in epoch 0 linear
    warm-up to 1 over `warmup_steps` (LAVIS starts at its `warmup_lr`, mixkit at 0), then from epoch e on
    max(floor, rate ** e) (BLIP pretraining: rate 0.9 per epoch)."""
    epoch = step // max(1, steps_per_epoch)
    if epoch == 0:
        return min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    return max(floor_ratio, decay_rate**epoch)


def no_decay(name: str, parameter: nn.Parameter) -> bool:
    """LAVIS's rule: biases, norm weights and every parameter of fewer than 2 dimensions get no weight decay."""
    lowered = name.lower()
    return parameter.ndim < 2 or "bias" in lowered or "norm" in lowered


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest `checkpoint-N` that finished saving (has the marker), or None."""
    complete = [path for path in Path(output_dir).glob("checkpoint-*") if (path / COMPLETE_MARKER).is_file()]
    return max(complete, key=lambda path: int(path.name.rsplit("-", 1)[1]), default=None)


class TaskModel(nn.Module):
    """The model bound to its task, so the Trainer (and DDP/FSDP around it) runs one forward per batch.

    DDP syncs gradients only for work done inside the wrapped module's forward; the stage-1 task calls several
    model methods, so they must all run under this forward. The model itself still only computes outputs.
    """

    def __init__(self, model: Blip2Base, task: Any):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: Any, num_items_in_batch: Any = None) -> Any:
        if num_items_in_batch is None:
            return self.task.compute(self.model, batch)
        return self.task.compute(self.model, batch, num_items_in_batch=num_items_in_batch)


class EpochToDataset(TrainerCallback):
    """Tell the dataset the epoch before its loader starts, for per-sample seeded augmentation."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(int(state.epoch or 0))


class TaskAfterOptimizerStep(TrainerCallback):
    """Run the task's `after_optimizer_step(model)` after every update (CLIP clamps its logit scale there)."""

    def __init__(self, task: Any):
        self.task = task

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                          **kwargs: Any) -> None:
        self.task.after_optimizer_step(model.model)  # the Trainer's model is `TaskModel`


class Blip2Trainer(Trainer):
    def __init__(
        self,
        model: Blip2Base,
        *args: Any,
        task: Any,
        batch_type: type,
        base_model: str | None = None,
        save_extras: Callable[[Path], None] | None = None,
        bad_images: BadImageBudget | None = None,
        progress_name: str = "train",
        **kwargs: Any,
    ):
        super().__init__(TaskModel(model, task), *args, **kwargs)
        # One progress display that suits its stream (a bar on a terminal, plain lines in logs), on stderr.
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(TrainingProgress(progress_name))
        self.add_callback(EpochToDataset(self.train_dataset))
        if hasattr(task, "after_optimizer_step"):
            self.add_callback(TaskAfterOptimizerStep(task))
        self.task = task
        self.batch_type = batch_type
        self.base_model = base_model
        self.save_extras = save_extras
        self.bad_images = bad_images or BadImageBudget()
        # `Trainer` counts the labelled tokens of each optimisation step (over accumulation micro-batches and, with
        # `average_tokens_across_devices`, over processes) only for models that take `num_items_in_batch`; here the
        # task takes it, so 1 process at batch 2B and 2 processes at batch B give the same loss and gradients.
        self.model_accepts_loss_kwargs = bool(getattr(task, "counts_label_tokens", False))
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.args.world_size:  # e.g. torchrun on a machine without GPUs and no --use_cpu
            raise ValueError(
                f"started as {launched} processes but the Trainer runs {self.args.world_size} (no process group it "
                "can use): each process would train alone on all the data; on CPU pass --use_cpu true (gloo)")
        self._last_log = (time.perf_counter(), 0)
        if getattr(self.args, "sharding_parallel_degree", 1) > 1:
            fsdp.shard_model(self.model, self.args.device)  # in place: self.model and self.model_wrapped stay it
            # The Trainer's flag for a model that owns its sharding and gradient reduction (set for models
            # `transformers` shards at load time): accelerate then neither wraps it in DDP nor moves it.
            self.is_distributed_loading_by_transformers = True

    @property
    def is_sharded(self) -> bool:
        """Whether FSDP2 shards the model (`--sharding_parallel_degree` > 1)."""
        return fsdp.is_sharded(self.model)

    def get_train_dataloader(self) -> DataLoader:
        """accelerate treats an `IterableDataset` as one stream for all processes (rank 0 reads every batch and
        dispatches slices, or every rank reads everything and keeps its part). A sharded dataset already reads
        only this rank's shards, so it gets a plain per-rank loader; the Trainer still moves batches to the
        device, computes steps from `len(loader)` (the same on every rank), and on resume skips the batches
        already trained on in the current epoch, which the stream repeats exactly."""
        if not isinstance(self.train_dataset, ShardedRecords):
            return super().get_train_dataloader()
        args = self.args
        # `dataloader_drop_last` goes to the dataset: the Trainer applies it only to map-style datasets.
        return shard_loader(self.train_dataset, self._train_batch_size, self.data_collator,
                            drop_last=args.dataloader_drop_last, num_workers=args.dataloader_num_workers,
                            pin_memory=args.dataloader_pin_memory, prefetch_factor=args.dataloader_prefetch_factor,
                            persistent_workers=args.dataloader_persistent_workers)

    # ---------------------------------------------------------------- loss

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor:
        from mixkit.train.collators import to_batch

        if "num_seen" in inputs:
            self.bad_images.update(inputs)
        if not self._everywhere("pixel_values" in inputs):  # every image of a batch was unreadable
            return self._zero_loss(model)
        losses = self._task_losses(model, to_batch(self.batch_type, inputs), num_items_in_batch)
        finite = bool(torch.isfinite(losses.loss))
        if not self._everywhere(finite):
            where = "a non-finite loss on another process" if finite else f"non-finite loss {losses.loss.item()}"
            logger.warning("%s at step %d; update skipped (image ids: %s)", where, self.state.global_step,
                           inputs.get("image_ids", "n/a"))
            return self._zero_loss(model)
        self._log_parts(losses)
        return (losses.loss, losses) if return_outputs else losses.loss

    def _task_losses(self, model: nn.Module, batch: Any, num_items_in_batch: Any) -> Any:
        if self.is_sharded and isinstance(self.task, DistillationTask):  # the EMA between forwards (see there)
            self.task.update_before_forward(model.model)
        if num_items_in_batch is None or not self.model_accepts_loss_kwargs:
            return model(batch)
        losses = model(batch, num_items_in_batch)
        if self.args.average_tokens_across_devices:
            # The count is global, but DDP averages gradients over processes: scale back up, as
            # `Trainer.compute_loss` does (the logged loss, averaged over processes, is then the global mean).
            losses.loss = losses.loss * self.accelerator.num_processes
        return losses

    def _everywhere(self, flag: bool) -> bool:
        """DDP: this process's `flag`. FSDP2: whether it holds on every process, because a sharded forward and
        backward run collectives in every unit, so a step is skipped by all processes or by none."""
        return fsdp.all_processes_agree(flag, self.args.device) if self.is_sharded else flag

    def _zero_loss(self, model: nn.Module) -> torch.Tensor:
        """A loss of 0 that still reaches every trainable parameter, so DDP's gradient sync stays in step.
        FSDP2: put any gathered unit back into its shards and reach the local shards (no collective runs, on any
        process: they all skip together); AdamW then steps with zero gradients, as under DDP."""
        if not self.is_sharded:
            return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
        for module in model.modules():
            if isinstance(module, fsdp.FSDPModule):
                module.reshard()
        return sum(fsdp.local_part(p).sum() * 0.0 for p in model.parameters() if p.requires_grad)

    def _log_parts(self, losses: Any) -> None:
        names = ("itc", "itm", "itg", "lm", "logit_scale")
        parts = {name: getattr(losses, name) for name in names if hasattr(losses, name)}
        if parts and self.state.global_step % max(1, int(self.args.logging_steps)) == 0 and self.model.training:
            self._last_parts = {name: value.item() for name, value in parts.items()}

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        logs.update(getattr(self, "_last_parts", {}))
        if "loss" in logs:
            logs["samples_per_second"] = round(self._throughput(), 2)
        if self.bad_images.seen:
            logs["skipped_images"] = self.bad_images.skipped
        super().log(logs, *args, **kwargs)

    def _throughput(self) -> float:
        """Training samples per second (all processes) since the previous log line."""
        now, step = time.perf_counter(), self.state.global_step
        last_time, last_step = getattr(self, "_last_log", (now, step))
        self._last_log = (now, step)
        samples = (step - last_step) * self.args.train_batch_size * self.args.world_size
        return samples / (now - last_time) if now > last_time else 0.0

    # ---------------------------------------------------------------- optimisation

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        rule = getattr(self.task, "no_decay", no_decay)  # a task may bring its recipe's rule (CLIP: open_clip's)
        return [name for name, parameter in model.named_parameters() if not rule(name, parameter)]

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            warmup = int(self.args.get_warmup_steps(num_training_steps))
            floor = self.args.eta_min / self.args.learning_rate if self.args.learning_rate > 0 else 0.0
            rate = getattr(self.args, "lr_decay_rate", 0.0)
            if rate > 0:
                per_epoch = self._update_steps_per_epoch(num_training_steps)
                self.lr_scheduler = LambdaLR(
                    optimizer, lambda step: warmup_step_decay_factor(step, warmup, per_epoch, rate, floor))
                self._created_lr_scheduler = True
                return self.lr_scheduler
            self.lr_scheduler = LambdaLR(
                optimizer, lambda step: warmup_cosine_factor(step, warmup, num_training_steps, floor))
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _update_steps_per_epoch(self, num_training_steps: int) -> int:
        """Optimizer steps per epoch, for per-epoch schedules."""
        if self.args.max_steps <= 0:
            return max(1, math.ceil(num_training_steps / self.args.num_train_epochs))
        batches = len(self.train_dataset) / (self._train_batch_size * self.args.world_size)
        batches = int(batches) if self.args.dataloader_drop_last else math.ceil(batches)
        return max(1, batches // self.args.gradient_accumulation_steps)

    # ---------------------------------------------------------------- checkpoints

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if state_dict is None and self.is_sharded:  # every process takes part in the gather; rank 0 gets it all
            state_dict = fsdp.full_model_state(self.model, trainable_only=self.base_model is not None)
        if not self.args.should_save:
            return
        directory = Path(output_dir or self.args.output_dir)
        model: Blip2Base = self.accelerator.unwrap_model(self.model, keep_torch_compile=False).model
        if state_dict is not None:  # FSDP: full tensors gathered from the shards (keys carry TaskModel's "model.";
            # its "task." part, a task's own training state, goes to TASK_STATE_FILE instead)
            state_dict = {key.removeprefix("model."): value for key, value in state_dict.items()
                          if key.startswith("model.")}
        model.save_pretrained(directory, base_model=self.base_model, state_dict=state_dict)
        if self.save_extras is not None:
            self.save_extras(directory)
        (directory / "training_args.json").write_text(self.args.to_json_string())
        (directory / "versions.json").write_text(json.dumps(library_versions(), indent=2) + "\n")

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        self._save_task_state(folder)
        self.accelerator.wait_for_everyone()  # every process's files (its RNG state) are written before the marker
        if self.args.should_save:
            marker = {"global_step": self.state.global_step, "epoch": self.state.epoch}
            scratch = folder / (COMPLETE_MARKER + ".tmp")
            scratch.write_text(json.dumps(marker) + "\n")
            os.replace(scratch, folder / COMPLETE_MARKER)  # written last: its presence means "complete"

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Trainable-only checkpoints: the frozen weights are already in the model (same base)."""
        task_model = model or self.model
        model = task_model.model
        # remove_duplicate=False: a tied weight (OPT's lm_head = embed_tokens) is in the state dict under both names
        frozen = tuple(name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad)
        weights = read_weights(Path(resume_from_checkpoint))
        if self.is_sharded:
            self._load_sharded(task_model, weights, frozen)
        else:
            load_weights_strict(model, weights, allowed_missing_prefixes=frozen)
        logger.info("resumed weights from %s", resume_from_checkpoint)
        self._load_task_state(Path(resume_from_checkpoint), task_model)

    def _save_task_state(self, folder: Path) -> None:
        """The task's own training state (momentum copies, feature queues, the distillation ramp), which the
        weights do not hold, as `TASK_STATE_FILE`. Every process takes part (FSDP gathers); rank 0 writes: the
        state is the same on every process (queues are filled from all of them, copies follow synced weights)."""
        state = task_training_state(self.task)
        if state and self.args.should_save:
            save_file(state, str(folder / TASK_STATE_FILE))

    def _load_task_state(self, folder: Path, task_model: nn.Module) -> None:
        if not task_training_state(self.task, gather=False):
            return
        path = folder / TASK_STATE_FILE
        if not path.is_file():  # a checkpoint written before the task state was saved
            logger.warning("%s has no %s: the momentum copies and queues start again from the weights", folder,
                           TASK_STATE_FILE)
            return
        state = load_file(str(path))
        if self.is_sharded:
            # torch's distributed state-dict loader takes tensors only: the extra state (the ramp) goes directly.
            extra = state.pop("_extra_state", None)
            if extra is not None:
                self.task.set_extra_state(extra)
            missing, unexpected = fsdp.load_full_model_state(task_model, {f"task.{k}": v for k, v in state.items()})
            missing = [key for key in missing if key.startswith("task.") and key != "task._extra_state"]
        else:
            result = self.task.load_state_dict(state, strict=False)
            missing, unexpected = result.missing_keys, result.unexpected_keys
        if missing or unexpected:
            raise CheckpointMismatchError(f"{path} does not match the task's state: missing {sorted(missing)[:10]}; "
                                          f"unexpected {sorted(unexpected)[:10]}")
        logger.info("resumed the task's training state from %s", path)

    def _load_sharded(self, task_model: nn.Module, weights: dict[str, torch.Tensor], frozen: tuple[str, ...]) -> None:
        """As `load_weights_strict`, into the shards: every process reads the full tensors and keeps its part."""
        missing, unexpected = fsdp.load_full_model_state(task_model, {f"model.{k}": v for k, v in weights.items()})
        covered = set(weights)
        for names in tied_groups(task_model.model):
            if covered.intersection(names):
                covered.update(names)
        missing = [k.removeprefix("model.") for k in missing]
        missing = sorted(k for k in missing if k not in covered and not k.startswith(frozen))
        if missing or unexpected:
            raise CheckpointMismatchError(f"checkpoint weights do not match the model: missing {missing[:10]}; "
                                          f"unexpected {sorted(unexpected)[:10]}")

    # ---------------------------------------------------------------- FSDP2: optimizer state and accumulation

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """FSDP2: the full optimizer state keyed by parameter name, gathered on rank 0 (one file, as DDP)."""
        if not self.is_sharded:
            return super()._save_optimizer_and_scheduler(output_dir)
        directory = Path(output_dir)
        fsdp.save_optimizer_state(self.model, self._inner_optimizer(), directory / OPTIMIZER_NAME,
                                  write=self.args.should_save)
        if self.args.should_save:
            torch.save(self.lr_scheduler.state_dict(), directory / SCHEDULER_NAME)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self.is_sharded:
            return super()._load_optimizer_and_scheduler(checkpoint)
        directory = Path(checkpoint)
        if not (directory / OPTIMIZER_NAME).is_file():
            raise FileNotFoundError(f"{directory}: no {OPTIMIZER_NAME}; cannot resume the optimizer exactly")
        fsdp.load_optimizer_state(self.model, self._inner_optimizer(), directory / OPTIMIZER_NAME)
        self.lr_scheduler.load_state_dict(torch.load(directory / SCHEDULER_NAME, weights_only=True))

    def _inner_optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate's AcceleratedOptimizer wraps it

    @contextlib.contextmanager
    def _defer_fsdp_gradient_reduction(self):
        """Gradient accumulation under FSDP2: reduce-scatter only after the last micro-batch. (The Trainer's own
        version reads a `transformers` model's `config.distributed_config`, which `TaskModel` has not.)"""
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)
