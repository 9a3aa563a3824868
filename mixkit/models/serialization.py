"""Weights in the Hugging Face layout: `model.safetensors` (or sharded with an index), strict loading.

Tied parameters (OPT's `lm_head` and input embeddings) are stored once, as `transformers` does. A checkpoint
that holds both halves of a tie with *different* values (Flan-T5's `shared` and `lm_head`: `transformers` 5.x
builds T5 tied regardless) unties them instead of silently keeping one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mixkit.models.layout import WEIGHTS_INDEX_NAME, WEIGHTS_NAME



class CheckpointMismatchError(RuntimeError):
    """The weights do not fit the model: every missing and unexpected key is listed."""


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Names that share one parameter tensor, in registration order."""
    names_by_tensor: dict[int, list[str]] = defaultdict(list)
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names_by_tensor[id(parameter)].append(name)
    return [names for names in names_by_tensor.values() if len(names) > 1]


def save_weights(model: nn.Module, directory: Path, only_trainable: bool = False,
                 state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `model.safetensors` with each tied tensor once; `only_trainable` keeps what `requires_grad`.
    `state` replaces `model.state_dict()` where the full tensors live elsewhere (gathered from FSDP shards)."""
    state = dict(model.state_dict() if state is None else state)
    for names in tied_groups(model):
        for duplicate in names[1:]:
            state.pop(duplicate, None)
    if only_trainable:
        trainable = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
        state = {name: value for name, value in state.items() if name in trainable}
    path = Path(directory) / WEIGHTS_NAME
    save_file({name: value.detach().cpu().contiguous() for name, value in state.items()}, str(path),
              {"format": "pt"})
    return path


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Read a single-file or sharded safetensors checkpoint. Never unpickles."""
    directory = Path(directory)
    single, index = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}")


def _untie_where_values_differ(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for names in tied_groups(model):
        present = [name for name in names if name in state]
        for name in present[1:]:
            if not torch.equal(state[name], state[present[0]]):
                module_name, _, attribute = name.rpartition(".")
                module = model.get_submodule(module_name)
                setattr(module, attribute, nn.Parameter(getattr(module, attribute).detach().clone()))


def load_weights_strict(
    model: nn.Module, state: dict[str, torch.Tensor], allowed_missing_prefixes: tuple[str, ...] = ()
) -> None:
    """Load `state` into `model`; anything missing (not covered by a tie or an allowed prefix) or
    unexpected raises `CheckpointMismatchError` naming every key."""
    _untie_where_values_differ(model, state)
    expected = set(model.state_dict())
    covered = set(state)
    for names in tied_groups(model):
        if covered.intersection(names):
            covered.update(names)
    missing = sorted(k for k in expected - covered if not k.startswith(allowed_missing_prefixes))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"weights do not match the model: missing {len(missing)} [{_listing(missing)}]; "
            f"unexpected {len(unexpected)} [{_listing(unexpected)}]"
        )
    model.load_state_dict(state, strict=False)


def take_matching_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> set[str]:
    """Load every tensor of `state` that `model` has under the same name and shape; return those names.

    For carrying weights between related models (the stage-1 Q-Former into stage 2), where some keys are
    meant not to fit: the caller decides which leftovers or gaps are errors."""
    own = model.state_dict()
    taken = {name: value for name, value in state.items() if name in own and own[name].shape == value.shape}
    model.load_state_dict(taken, strict=False)
    return set(taken)
