"""A declarative state-dict key map: ordered rules, each renaming one source key to one or more target keys.

A rule matches a source key with an anchored regex and names its target(s) with `re` templates; `op` says how
the tensor travels: `copy`, `transpose` (a [in, out] matrix used as `x @ W` becomes a `nn.Linear` weight) or
`chunk` (a fused [3D, ...] in-projection split into q, k, v along dim 0). `Drop` rules list what is deliberately
left out, each with its reason and an optional check of the dropped tensor. Nothing is dropped silently: every
source key is converted, dropped with a reason, or reported as unmapped, and `check_keys` compares the result
with the target model's keys (missing, unexpected, unmapped), as `mixkit.models.blip2.convert_lavis` does for
LAVIS files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from mixkit.models.blip2.convert_lavis import listing

Op = Literal["copy", "transpose", "chunk"]


class ConversionError(ValueError):
    """A checkpoint cannot be converted faithfully; the message names every offending key."""


@dataclass(frozen=True)
class Rule:
    pattern: str  # anchored regex on the source key
    targets: tuple[str, ...]  # `re` replacement templates; several only for "chunk"
    op: Op = "copy"

    def __post_init__(self) -> None:
        if (self.op == "chunk") != (len(self.targets) > 1):
            raise ValueError(f"rule {self.pattern!r}: 'chunk' needs several targets, other ops exactly one")


@dataclass(frozen=True)
class Drop:
    pattern: str
    reason: str
    # Called with (key, tensor); raises ConversionError when the dropped tensor is not what the reason says.
    check: Callable[[str, Tensor], None] | None = None


@dataclass
class KeyMapReport:
    source: str  # what was converted (for messages): "open_clip", "EVA-CLIP"
    state_dict: dict[str, Tensor] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """JSON-ready description of the conversion (no tensors)."""
        return {"source": self.source, "converted_keys": len(self.state_dict), "unmapped": self.unmapped,
                "dropped": self.dropped}


def _apply(op: Op, tensor: Tensor, count: int, key: str) -> list[Tensor]:
    if op == "copy":
        return [tensor]
    if op == "transpose":
        if tensor.dim() != 2:
            raise ConversionError(f"{key}: expected a matrix to transpose, got shape {tuple(tensor.shape)}")
        return [tensor.t().contiguous()]
    if tensor.shape[0] % count:
        raise ConversionError(f"{key}: first dimension {tensor.shape[0]} does not split into {count} parts")
    return [part.contiguous() for part in tensor.chunk(count, dim=0)]


def convert_state_dict(source_sd: Mapping[str, Tensor], rules: Sequence[Rule], drops: Sequence[Drop],
                       source: str) -> KeyMapReport:
    """Every source key through the first matching drop or rule (drops first); the rest are unmapped."""
    report = KeyMapReport(source)
    for key, tensor in source_sd.items():
        drop = next((d for d in drops if re.match(d.pattern, key)), None)
        if drop is not None:
            if drop.check is not None:
                drop.check(key, tensor)
            report.dropped[key] = drop.reason
            continue
        rule = next((r for r in rules if re.match(r.pattern, key)), None)
        if rule is None:
            report.unmapped.append(key)
            continue
        names = [re.sub(rule.pattern, template, key, count=1) for template in rule.targets]
        for name, value in zip(names, _apply(rule.op, tensor, len(names), key)):
            if name in report.state_dict:
                raise ConversionError(f"two {source} keys map to {name}; the last one was {key}")
            report.state_dict[name] = value
    return report


def check_keys(report: KeyMapReport, target_keys: Iterable[str]) -> None:
    """Raise `ConversionError` listing missing, unexpected and unmapped keys, if any."""
    target = set(target_keys)
    parts = [("missing", sorted(target - report.state_dict.keys())),
             ("unexpected", sorted(report.state_dict.keys() - target)),
             (f"unmapped {report.source}", report.unmapped)]
    problems = [listing(f"{name} keys", keys) for name, keys in parts if keys]
    if problems:
        raise ConversionError(f"{report.source} checkpoint does not match the target model:\n" + "\n".join(problems))


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys without a leading `prefix` where every key has it (DDP's "module.")."""
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def read_source_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from safetensors, or a torch file loaded with `weights_only=True` (never an arbitrary
    pickle); a training checkpoint's {"state_dict": ...} is unwrapped and a DDP "module." prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises several types for unsafe or broken files
            raise ConversionError(f"{path}: cannot be read as plain tensors with weights_only=True ({error})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors")
    return strip_prefix(state, "module.")


__all__ = ["ConversionError", "Drop", "KeyMapReport", "Rule", "check_keys", "convert_state_dict",
           "read_source_weights", "strip_prefix"]
