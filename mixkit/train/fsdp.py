"""Fully sharded data parallel training with torch's FSDP2 (`fully_shard`), on CPU (gloo) and GPU alike.

Why mixkit shards the model itself instead of asking accelerate (`--fsdp`): accelerate engages FSDP only on GPUs
(on CPU it silently falls back to DDP), and FSDP1 flattens each unit's parameters into one `FlatParameter` that
must be all trainable or all frozen (unless `use_orig_params`, where frozen parameters in a trainable unit still
cost gradient memory) -- a poor fit for BLIP-2, whose root holds the frozen LLM embeddings beside the trainable
queries. `fully_shard` keeps every parameter a `DTensor` of its own, so frozen and trainable parameters can share
a unit: only parameters that received a gradient are reduce-scattered (all trainable parameters must share one
dtype per unit), and frozen ones never get a gradient or optimizer state.

The units, innermost first (FSDP2 requires children before parents): every block of every outermost layer
stack (`nn.ModuleList`): ViT layers, Q-Former layers, the LLM's decoder (or T5 encoder and decoder) blocks; then
the root, `TaskModel`, which holds the rest: ViT embeddings, `ln_vision`, the queries, the projection and the
LLM's embeddings and head. The root stays whole from forward to backward (FSDP2's default for the root): the
task calls the LLM's input embeddings outside the LLM's forward, and OPT ties them to the head, so they cannot be
a unit of their own.

`Blip2Trainer` shards the model right after `Trainer.__init__` and tells the Trainer the model owns its
sharding and gradient reduction (the path `transformers` takes for models it shards at load time), so
accelerate does not wrap it in DDP. Checkpoints gather full tensors on rank 0 (`full_model_state`,
`full_optimizer_state`), so an FSDP2 checkpoint has the same files and keys as a DDP one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

logger = logging.getLogger(__name__)


def layer_blocks(model: nn.Module) -> list[nn.Module]:
    """Every element of each outermost `nn.ModuleList`: the repeated blocks of the ViT, Q-Former and LLM
    (a T5 block's own inner list of sub-layers stays inside its block)."""
    blocks: list[nn.Module] = []
    taken: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not any(name.startswith(prefix + ".") for prefix in taken):
            taken.append(name)
            blocks.extend(module)
    return blocks


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Apply FSDP2 in place over every process of the default group: one unit per layer block, then the root.
    `requires_grad` must be final before this call (frozen parts frozen).

    `fully_shard` cannot shard 0-d parameters (stage 1's ITC temperature `temp`): they stay whole on every
    process, outside FSDP, and the Trainer averages their gradient over processes itself
    (`Trainer._sync_replicated_trainable_parameters`, which it runs for models that manage their own sharding)."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    scalars = {parameter for parameter in model.parameters() if parameter.ndim == 0} or None
    blocks = layer_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh, ignored_params=scalars)
    fully_shard(model, mesh=mesh, ignored_params=scalars)
    local = sum(local_part(parameter).numel() for parameter in model.parameters())
    total = sum(parameter.numel() for parameter in model.parameters())
    logger.info("FSDP2: %d units (%d layer blocks + the root) over %d processes; this process holds %s of %s "
                "parameter values", len(blocks) + 1, len(blocks), mesh.size(), f"{local:,}", f"{total:,}")
    return model


def local_part(parameter: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded parameter (differentiable), the parameter itself when FSDP ignores it."""
    return parameter.to_local() if isinstance(parameter, DTensor) else parameter


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_model_state(model: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors on rank 0's CPU, an empty dict elsewhere. Every process must call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return get_model_state_dict(model, options=options)


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load full tensors (the same on every process) into the sharded model; return (missing, unexpected)."""
    result = set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    return list(result.missing_keys), list(result.unexpected_keys)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, full tensors on rank 0's CPU. Every process must call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def save_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path, write: bool) -> None:
    """Every process takes part; the one with `write` (rank 0) saves the full state to `path`."""
    state = full_optimizer_state(model, optimizer)
    if write:
        torch.save(state, path)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Every process reads the full state and keeps its shard."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def all_processes_agree(flag: bool, device: torch.device) -> bool:
    """True only when `flag` holds on every process: a sharded step runs collectives inside forward and
    backward, so skipping it must be decided by all processes together."""
    value = torch.tensor(1 if flag else 0, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())
