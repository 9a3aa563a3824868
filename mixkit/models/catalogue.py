"""One explicit catalogue of named checkpoints, for every family.

Each family lists its entries as plain data in `mixkit/models/<family>/checkpoints.py`; the tuple below
names those lists explicitly (nothing registers itself on import). `list_checkpoints` / `get_checkpoint`
read it; an unknown name gets "did you mean".
"""

from __future__ import annotations

import difflib

from mixkit.models.albef.checkpoints import ALBEF_CHECKPOINTS
from mixkit.models.blip.checkpoints import BLIP_CHECKPOINTS
from mixkit.models.blip2.checkpoints import BLIP2_CHECKPOINTS
from mixkit.models.clip.checkpoints import CLIP_CHECKPOINTS
from mixkit.models.instructblip.checkpoints import INSTRUCTBLIP_CHECKPOINTS
from mixkit.models.minigpt4.checkpoints import MINIGPT4_CHECKPOINTS
from mixkit.models.entry import CheckpointEntry

_CHECKPOINTS: tuple[CheckpointEntry, ...] = (*BLIP2_CHECKPOINTS, *BLIP_CHECKPOINTS, *CLIP_CHECKPOINTS,
                                               *MINIGPT4_CHECKPOINTS, *INSTRUCTBLIP_CHECKPOINTS,
                                               *ALBEF_CHECKPOINTS)


class UnknownCheckpointError(KeyError, ValueError):
    """A name that is not in the catalogue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError would print the message repr()'d, quotes and all.
        return self.message


def list_checkpoints(family: str | None = None) -> list[CheckpointEntry]:
    """Catalogue entries in catalogue order, all or one family's."""
    return [entry for entry in _CHECKPOINTS if family is None or entry.family == family]


def checkpoint_names() -> list[str]:
    return [entry.name for entry in _CHECKPOINTS]


def unknown_checkpoint_message(name: str) -> str:
    """'unknown checkpoint' plus the closest names and where to list them all."""
    message = f"unknown checkpoint {name!r}"
    close = difflib.get_close_matches(name, checkpoint_names(), n=3, cutoff=0.6)
    if close:
        quoted = [repr(c) for c in close]
        options = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        message += f"; did you mean {options}?"
    return message + " Run `mixkit models` to list the named checkpoints."


def get_checkpoint(name: str) -> CheckpointEntry:
    """The entry called ``name``; an unknown name raises with close matches."""
    for entry in _CHECKPOINTS:
        if entry.name == name:
            return entry
    raise UnknownCheckpointError(unknown_checkpoint_message(name))


def entries_for_hub_repo(repo: str) -> list[CheckpointEntry]:
    """The entries whose weights are the Hub repository `repo` (several names may share one)."""
    return [entry for entry in _CHECKPOINTS if entry.hf_repo == repo]


def format_catalogue_table() -> str:
    """An aligned text table of the catalogue, as printed by ``mixkit models``."""
    header = ("NAME", "FAMILY", "KIND", "TASKS", "IMAGE", "SOURCE", "DESCRIPTION")
    rows = [header] + [
        (e.name, e.family, e.kind, ",".join(e.tasks), f"{e.image_size}px", e.source, e.description)
        for e in _CHECKPOINTS
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    return "\n".join(lines)
