"""Weights in the Hugging Face layout: `model.safetensors` (or sharded with an index), strict loading.

Tied parameters (OPT's `lm_head` and input embeddings) are stored once, as `transformers` does. A checkpoint
that holds both halves of a tie with *different* values (Flan-T5's `shared` and `lm_head`: `transformers` 5.x
builds T5 tied regardless) unties them instead of silently keeping one.

Loading a checkpoint never initialises weights it then overwrites: `from_pretrained` builds the model under
`parameters_on_meta()` and loads with `load_weights_strict(..., assign=True)`, so the parameters become the
memory-mapped checkpoint tensors themselves (one copy in memory, each weight read from disk once, when used).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from mixkit.models.layout import WEIGHTS_INDEX_NAME, WEIGHTS_NAME

ModuleT = TypeVar("ModuleT", bound=nn.Module)


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


def weight_files(directory: Path) -> list[Path]:
    """`model.safetensors`, or every shard its index names."""
    directory = Path(directory)
    single, index = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        return [single]
    if index.is_file():
        return [directory / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}")


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """A single-file or sharded safetensors checkpoint, memory-mapped (never unpickled). The tensors are views
    of the files (copy-on-write: changing one never changes the file), so nothing is read from disk until used
    and a tensor that is overridden (a base model's, under a trainable-only checkpoint) is never read."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        with safe_open(str(path), framework="pt") as weights:
            state.update({name: weights.get_tensor(name) for name in weights.keys()})
    return state


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the `meta` device: shapes only, no memory, no random
    initialisation. Buffers stay real, so the non-persistent ones that no checkpoint holds (position ids,
    rotary tables) are computed as usual; a plain `torch.device("meta")` would leave them empty.

    Uses torch's parameter-registration hook; only the calling thread's modules are affected."""
    owner = threading.get_ident()

    def to_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> nn.Parameter | None:
        # An already-meta parameter is returned unchanged (None) so ties made by assignment survive.
        if parameter is None or parameter.is_meta or threading.get_ident() != owner:
            return None
        return nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)

    handle = register_module_parameter_registration_hook(to_meta)
    try:
        yield
    finally:
        handle.remove()


def _untie_where_values_differ(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for names in tied_groups(model):
        present = [name for name in names if name in state]
        for name in present[1:]:
            if not torch.equal(state[name], state[present[0]]):
                module_name, _, attribute = name.rpartition(".")
                module = model.get_submodule(module_name)
                setattr(module, attribute, nn.Parameter(getattr(module, attribute).detach().clone()))


def load_weights_strict(
    model: nn.Module, state: dict[str, torch.Tensor], allowed_missing_prefixes: tuple[str, ...] = (),
    assign: bool = False,
) -> None:
    """Load `state` into `model`; anything missing (not covered by a tie or an allowed prefix) or
    unexpected raises `CheckpointMismatchError` naming every key.

    `assign` makes the checkpoint's tensors the model's (for a model built under `parameters_on_meta`),
    cast to each parameter's dtype as copying would, with the ties re-made: what is left on `meta` was
    allowed to be missing (see `materialize_meta_tensors`)."""
    _untie_where_values_differ(model, state)
    groups = tied_groups(model)
    expected = model.state_dict(keep_vars=True)
    covered = set(state)
    for names in groups:
        if covered.intersection(names):
            covered.update(names)
    missing = sorted(k for k in expected.keys() - covered if not k.startswith(allowed_missing_prefixes))
    unexpected = sorted(set(state) - expected.keys())
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"weights do not match the model: missing {len(missing)} [{_listing(missing)}]; "
            f"unexpected {len(unexpected)} [{_listing(unexpected)}]"
        )
    if not assign:
        model.load_state_dict(state, strict=False)
        return
    # `.to` returns the tensor itself when the dtype already fits: no copy of a memory-mapped weight.
    model.load_state_dict({name: value.to(expected[name].dtype) for name, value in state.items()},
                          strict=False, assign=True)
    _retie(model, groups, state)


def _retie(model: nn.Module, groups: list[list[str]], state: dict[str, torch.Tensor]) -> None:
    """Assigning gives each loaded name its own tensor; point every name of a tie at the first loaded one
    (their values are equal: `_untie_where_values_differ` split the others off)."""
    for names in groups:
        loaded = [name for name in names if name in state]
        if not loaded:
            continue
        parameter = model.get_parameter(loaded[0])
        for name in names:
            module_name, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(module_name), attribute, parameter)


def meta_tensor_names(model: nn.Module) -> list[str]:
    """Parameters and buffers that have no data yet."""
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [name for name, tensor in tensors if tensor.is_meta]


def materialize_meta_tensors(model: nn.Module, build: Callable[[], nn.Module]) -> list[str]:
    """Give whatever loading left on `meta` (weights allowed to be missing, a buffer derived from a parameter)
    the values a freshly built model has: `build()` runs only when something is left, so the initialisation
    is exactly the one the model would have had without the meta device. Returns the names filled."""
    names = meta_tensor_names(model)
    if not names:
        return []
    fresh = build()
    made: dict[int, nn.Parameter] = {}  # one new parameter per fresh one, so ties within `fresh` carry over
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_name)
        value = getattr(fresh.get_submodule(module_name), attribute)
        if isinstance(value, nn.Parameter):
            if id(value) not in made:
                made[id(value)] = nn.Parameter(value.detach(), requires_grad=getattr(module, attribute).requires_grad)
            setattr(module, attribute, made[id(value)])
        else:
            module._buffers[attribute] = value  # in place of the meta one: its persistence flag is kept
    return names


def build_and_load(build: Callable[[], ModuleT], state: dict[str, torch.Tensor],
                   allowed_missing_prefixes: tuple[str, ...] = ()) -> ModuleT:
    """What every `from_pretrained` does: `build()` under `parameters_on_meta`, `state` loaded strictly by
    assignment (the checkpoint's tensors become the parameters), then what was allowed to be missing filled as a
    fresh `build()` initialises it. Returned in eval mode."""
    with parameters_on_meta():
        model = build()
    load_weights_strict(model, state, allowed_missing_prefixes, assign=True)
    materialize_meta_tensors(model, build)
    return model.eval()


def take_matching_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> set[str]:
    """Load every tensor of `state` that `model` has under the same name and shape; return those names.

    For carrying weights between related models (the stage-1 Q-Former into stage 2), where some keys are
    meant not to fit: the caller decides which leftovers or gaps are errors."""
    own = model.state_dict()
    taken = {name: value for name, value in state.items() if name in own and own[name].shape == value.shape}
    model.load_state_dict(taken, strict=False)
    return set(taken)
