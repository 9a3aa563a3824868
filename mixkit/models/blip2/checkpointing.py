"""Activation (gradient) checkpointing shared by the BLIP-2 towers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint


def maybe_checkpoint(function: Callable[..., Any], *args: Any, enabled: bool) -> Any:
    """Call `function(*args)`, recomputing its activations in the backward pass when `enabled`."""
    if enabled:
        return torch_checkpoint(function, *args, use_reentrant=False)
    return function(*args)


def run_layers(layers: Iterable[torch.nn.Module], hidden_states: torch.Tensor, *, checkpoint: bool) -> torch.Tensor:
    """Apply single-input layers in order, optionally checkpointed layer by layer."""
    for layer in layers:
        hidden_states = maybe_checkpoint(layer, hidden_states, enabled=checkpoint)
    return hidden_states
