"""Per-device memory before a run: weights, gradients, AdamW states and activations under each data-parallel
layout, and whether they fit a GPU (`--gpu_memory_gib`).

The accounting, per device, with T = bytes of the trainable parameters, F = bytes of the frozen ones (each in its
own dtype), P = the trainable parameters' count and N = processes (the ZeRO paper's model-state accounting):

| layout      | weights          | gradients          | AdamW states                             |
| ----------- | ---------------- | ------------------ | ---------------------------------------- |
| DDP         | T + F            | T                  | 2T (exp_avg, exp_avg_sq in the weights' dtype) |
| FSDP(N)     | (T + F)/N + g    | T/N + g_trainable  | 2T/N                                      |
| ZeRO-2(N)   | T + F            | T/N                | (2T + 4P)/N (plus its fp32 copy of the partition) |

g: FSDP2 gathers one unit at a time; the root unit (ViT embeddings, queries, projections, the LLM's embeddings and
head, see `mixkit.train.fsdp`) stays gathered for the whole step, and one layer block is prefetched while the
previous one runs, so g = root + 2 x the largest block (g_trainable: their trainable part, whose full gradients
exist until reduce-scattered). Communication buffers (DDP buckets, ZeRO's reduce bucket) are not counted.

Activations (rough, `activation_bytes`): per transformer layer that backward passes through, Korthikanti et al.
2022 ("Reducing Activation Recomputation in Large Transformer Models", eq. 1): s*b*h*(34 + 5*a*s/h) bytes at 2
bytes per value (s sequence, b batch, h hidden, a heads), scaled to the run's value size (4 bytes in fp32, 2 under
--bf16/--fp16). Backward passes through the Q-Former, through the LLM (frozen, but the queries' gradient crosses
it) and through the ViT only when it trains (caption fine-tuning). Stage 1 runs the Q-Former over queries + text
about 3 times per batch (ITC, ITM, ITG). With gradient checkpointing the ViT and Q-Former keep each layer's input
(s*b*h values) plus one layer's full set. The LLM's logits and their gradient add 2*b*s*vocab fp32 values.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import CLIPModel

from mixkit.models.blip2.modeling import Blip2Base, Blip2Model
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.train.arguments import Blip2TrainingArguments, DataArguments
from mixkit.train.fsdp import layer_blocks

logger = logging.getLogger(__name__)
GIB = 2**30
STAGE1_QFORMER_PASSES = 3  # ITC (queries; text), ITM (queries + text), ITG (text over cached queries)


class MemoryPlanError(ValueError):
    """The chosen layout does not fit the GPU memory given (`--gpu_memory_gib`): raised before training."""


@dataclass(frozen=True)
class ParameterSplit:
    """Parameter bytes of a model, trainable and frozen, and of its FSDP2 units (tied weights counted once)."""

    trainable_bytes: int
    frozen_bytes: int
    trainable_count: int
    root_bytes: int  # parameters outside every layer block: FSDP2's root unit
    root_trainable_bytes: int
    largest_block_bytes: int
    largest_block_trainable_bytes: int

    @classmethod
    def of(cls, model: nn.Module) -> ParameterSplit:
        trainable, frozen = _bytes(model.parameters())
        blocks = [_bytes(block.parameters()) for block in layer_blocks(model)] or [(0, 0)]
        largest = max(blocks, key=sum)
        return cls(
            trainable_bytes=trainable,
            frozen_bytes=frozen,
            trainable_count=sum(p.numel() for p in model.parameters() if p.requires_grad),
            root_bytes=trainable + frozen - sum(sum(block) for block in blocks),
            root_trainable_bytes=trainable - sum(block[0] for block in blocks),
            largest_block_bytes=sum(largest),
            largest_block_trainable_bytes=largest[0],
        )


def _bytes(parameters) -> tuple[int, int]:
    """(trainable, frozen) bytes; `parameters()` already yields a tied weight once."""
    trainable = frozen = 0
    for parameter in parameters:
        size = parameter.numel() * parameter.element_size()
        if parameter.requires_grad:
            trainable += size
        else:
            frozen += size
    return trainable, frozen


@dataclass(frozen=True)
class LayoutEstimate:
    layout: str  # "DDP", "FSDP(8)", "ZeRO-2(8)"
    weights: float  # bytes per device
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def fits(self, gpu_bytes: float) -> bool:
        return self.total <= gpu_bytes


def ddp_estimate(split: ParameterSplit, activations: float, processes: int = 1) -> LayoutEstimate:
    name = "DDP" if processes > 1 else "single process"
    t = split.trainable_bytes
    return LayoutEstimate(name, t + split.frozen_bytes, t, 2 * t, activations)


def fsdp_estimate(split: ParameterSplit, activations: float, processes: int) -> LayoutEstimate:
    n, t = processes, split.trainable_bytes
    gathered = split.root_bytes + 2 * split.largest_block_bytes
    gathered_trainable = split.root_trainable_bytes + split.largest_block_trainable_bytes
    return LayoutEstimate(f"FSDP({n})", (t + split.frozen_bytes) / n + gathered, t / n + gathered_trainable,
                          2 * t / n, activations)


def zero2_estimate(split: ParameterSplit, activations: float, processes: int) -> LayoutEstimate:
    n, t = processes, split.trainable_bytes
    return LayoutEstimate(f"ZeRO-2({n})", t + split.frozen_bytes, t / n, (2 * t + 4 * split.trainable_count) / n,
                          activations)


def plan(split: ParameterSplit, activations: float, processes: int) -> list[LayoutEstimate]:
    """Every layout for `processes` devices (one row when there is one device: nothing to shard over)."""
    if processes == 1:
        return [ddp_estimate(split, activations)]
    return [ddp_estimate(split, activations, processes), fsdp_estimate(split, activations, processes),
            zero2_estimate(split, activations, processes)]


# ---------------------------------------------------------------- activations


@dataclass(frozen=True)
class Tower:
    """One stack of transformer layers as backward sees it."""

    layers: int
    hidden: int
    heads: int
    sequence: int
    passes: int = 1  # forward runs over the stack per batch
    checkpointed: bool = False


def layer_activation_bytes(sequence: int, batch: int, hidden: int, heads: int, value_bytes: int) -> float:
    """Korthikanti et al. 2022, eq. 1, scaled from 2-byte values to `value_bytes`."""
    return sequence * batch * hidden * (34 + 5 * heads * sequence / hidden) * value_bytes / 2


def tower_bytes(tower: Tower, batch: int, value_bytes: int) -> float:
    full = layer_activation_bytes(tower.sequence, batch, tower.hidden, tower.heads, value_bytes)
    if tower.checkpointed:  # each layer's input is kept; one layer is recomputed in full at a time
        per_pass = tower.layers * tower.sequence * batch * tower.hidden * value_bytes + full
    else:
        per_pass = tower.layers * full
    return tower.passes * per_pass


@dataclass(frozen=True)
class BatchShape:
    batch: int  # per device
    image_size: int
    text_length: int  # tokens per caption
    value_bytes: int  # 4 in fp32, 2 under bf16/fp16 autocast
    checkpointing: bool = False


def two_tower_stacks(model: nn.Module, shape: BatchShape) -> list[Tower]:
    """A dual encoder (CLIP): its vision tower over the patches when it trains, its text tower over the caption."""
    config, stacks = model.config, []
    vision, text = config.vision_config, config.text_config
    if any(p.requires_grad for p in model.vision_model.parameters()):
        patches = (shape.image_size // vision.patch_size) ** 2 + 1
        stacks.append(Tower(vision.num_hidden_layers, vision.hidden_size, vision.num_attention_heads, patches))
    stacks.append(Tower(text.num_hidden_layers, text.hidden_size, text.num_attention_heads, shape.text_length))
    return stacks


def blip_stacks(model: nn.Module, shape: BatchShape) -> list[Tower]:
    """BLIP: the ViT when it trains; the text encoder (ITC, then ITM over 3 x batch: pairs and two negatives)
    and the decoder, each over the caption (or question) tokens."""
    config, ckpt, stacks = model.config, shape.checkpointing, []
    vision, text = config.vision_config, config.text_config
    if any(p.requires_grad for p in model.vision_model.parameters()):
        patches = (shape.image_size // vision.patch_size) ** 2 + 1
        stacks.append(Tower(vision.num_hidden_layers, vision.hidden_size, vision.num_attention_heads, patches,
                            checkpointed=ckpt))
    passes = (1 + 3 if model.heads.contrastive else 1) if model.heads.encoder else 0
    for count in (passes, 1 if model.heads.decoder else 0):
        if count:
            stacks.append(Tower(text.num_hidden_layers, text.hidden_size, text.num_attention_heads,
                                shape.text_length, count, ckpt))
    return stacks


def towers(model: Blip2Base, shape: BatchShape) -> list[Tower]:
    """The stacks backward passes through, with their sequence lengths for this batch shape."""
    if isinstance(model, CLIPModel):
        return two_tower_stacks(model, shape)
    if type(model).__name__ in ("BlipModel", "AlbefModel"):  # ALBEF: BLIP's stacks, a close upper bound
        return blip_stacks(model, shape)
    if type(model).__name__ == "MiniGPT4Model":  # frozen towers; only the LLM's stack is backpropagated
        text = model.language_model.config
        return [Tower(text.num_hidden_layers, text.hidden_size, text.num_attention_heads,
                      model.num_image_tokens(shape.image_size) + shape.text_length)]
    config, ckpt = model.config, shape.checkpointing
    vision, qformer = config.vision_config, config.qformer_config
    stacks = []
    if any(p.requires_grad for p in model.vision_model.encoder.parameters()):
        patches = (shape.image_size // vision.patch_size) ** 2 + 1
        stacks.append(Tower(vision.num_hidden_layers, vision.hidden_size, vision.num_attention_heads, patches,
                            checkpointed=ckpt))
    queries = config.num_query_tokens
    if isinstance(model, Blip2Stage1Model):
        stacks.append(Tower(qformer.num_hidden_layers, qformer.hidden_size, qformer.num_attention_heads,
                            queries + shape.text_length, STAGE1_QFORMER_PASSES, ckpt))
        return stacks
    stacks.append(Tower(qformer.num_hidden_layers, qformer.hidden_size, qformer.num_attention_heads, queries,
                        checkpointed=ckpt))
    if isinstance(model, Blip2Model):
        text = config.text_config
        layers = text.num_hidden_layers + (text.num_decoder_layers if model.is_encoder_decoder else 0)
        stacks.append(Tower(layers, text.hidden_size, text.num_attention_heads, queries + shape.text_length))
    return stacks


def activation_bytes(model: Blip2Base, shape: BatchShape) -> float:
    """Rough activation memory per device (see the module docstring)."""
    total = sum(tower_bytes(tower, shape.batch, shape.value_bytes) for tower in towers(model, shape))
    if isinstance(model, Blip2Model):  # fp32 logits over the vocabulary, and their gradient
        positions = model.config.num_query_tokens + shape.text_length
        total += 2 * shape.batch * positions * model.config.text_config.vocab_size * 4
    return total


# ---------------------------------------------------------------- the table and the verdict


def memory_table(estimates: list[LayoutEstimate], gpu_bytes: float | None, chosen: str | None) -> str:
    unit, scale = _unit(max(estimate.total for estimate in estimates))
    header = ["layout", "weights", "gradients", "AdamW", "activations", f"total ({unit})"]
    rows = [header]
    for estimate in estimates:
        values = (estimate.weights, estimate.gradients, estimate.optimizer, estimate.activations, estimate.total)
        row = [estimate.layout + (" *" if estimate.layout == chosen else "")] + [f"{v / scale:.2f}" for v in values]
        if gpu_bytes is not None:
            row.append("fits" if estimate.fits(gpu_bytes) else "does not fit")
        rows.append(row)
    if gpu_bytes is not None:
        header.append(f"in {gpu_bytes / GIB:g} GiB")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _unit(value: float) -> tuple[str, int]:
    """GiB for real models; MiB or KiB so that tiny test models do not print 0.00."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20)):
        if value >= scale:
            return unit, scale
    return "KiB", 2**10


def _readable(value: float) -> str:
    unit, scale = _unit(value)
    return f"{value / scale:.2f} {unit}"


def check_fits(estimates: list[LayoutEstimate], chosen: str, gpu_bytes: float) -> None:
    """Raise `MemoryPlanError` when the chosen layout does not fit, naming the layouts that would."""
    by_name = {estimate.layout: estimate for estimate in estimates}
    if chosen not in by_name or by_name[chosen].fits(gpu_bytes):
        return
    fitting = [estimate.layout for estimate in estimates if estimate.fits(gpu_bytes)]
    advice = (f"layouts that fit: {', '.join(fitting)}" if fitting else
              "no layout fits at this process count: add processes, lower the batch size or turn on "
              "--gradient_checkpointing")
    raise MemoryPlanError(f"{chosen} needs about {_readable(by_name[chosen].total)} per device, more than "
                          f"--gpu_memory_gib {gpu_bytes / GIB:g}; {advice} (estimate: see the table above)")


def log_plan(stage: str, model: Blip2Base, shape: BatchShape, processes: int, chosen: str | None,
             gpu_memory_gib: float | None) -> list[LayoutEstimate]:
    """Log the parameter split and the per-layout table; stop (raise) if `chosen` does not fit the GPU."""
    split = ParameterSplit.of(model)
    estimates = plan(split, activation_bytes(model, shape), processes)
    gpu_bytes = None if gpu_memory_gib is None else gpu_memory_gib * GIB
    if int(os.environ.get("RANK", "0")) == 0:  # one table per run, not per process
        trainable, total = split.trainable_count, sum(p.numel() for p in model.parameters())
        logger.info("%s: %s trainable of %s parameters (%.1f%%); memory per device (activations rough, for batch "
                    "%d per device; * = this run):\n%s", stage, f"{trainable:,}", f"{total:,}",
                    100 * trainable / max(1, total), shape.batch, memory_table(estimates, gpu_bytes, chosen))
    if gpu_bytes is not None and chosen is not None:
        check_fits(estimates, chosen, gpu_bytes)
    return estimates


def value_bytes(bf16: bool, fp16: bool) -> int:
    return 2 if bf16 or fp16 else 4


def chosen_layout(args: Blip2TrainingArguments, processes: int) -> str | None:
    """The table's name for the layout this run uses (None: a DeepSpeed stage the planner does not model)."""
    if args.deepspeed:
        config = args.deepspeed if isinstance(args.deepspeed, dict) else json.loads(Path(args.deepspeed).read_text())
        return f"ZeRO-2({processes})" if config.get("zero_optimization", {}).get("stage") == 2 else None
    if args.sharding_parallel_degree > 1:
        return f"FSDP({processes})"
    return "DDP" if processes > 1 else "single process"


def plan_memory(stage: str, model: Blip2Base, data: DataArguments, args: Blip2TrainingArguments,
                checkpointing: bool) -> list[LayoutEstimate]:
    """The run's table (its processes, batch, image size, caption length, precision); with --gpu_memory_gib, stop
    before training when the run's layout does not fit."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    shape = BatchShape(args.per_device_train_batch_size, data.image_size, data.max_text_length,
                       value_bytes(args.bf16, args.fp16), checkpointing)
    return log_plan(stage, model, shape, processes, chosen_layout(args, processes), args.gpu_memory_gib)
