"""The shard index (`shards.json`) and finding shards from a folder, an index or a brace pattern."""

from __future__ import annotations


import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Sequence
from typing import Any


from mixkit.data.shards.tar import grouped_members, open_tar, read_meta


logger = logging.getLogger(__name__)

INDEX_NAME = "shards.json"
INDEX_FORMAT = "mixkit.shards"
INDEX_VERSION = 1

# ----------------------------------------------------------------------------- index


@dataclass(frozen=True)
class ShardInfo:
    """One tar file: its name (relative to the index) and how much it holds."""

    name: str
    num_images: int  # tar samples (keys)
    num_samples: int  # dataset samples: records, e.g. captions
    num_bytes: int


class ShardTotals:
    """Totals over a `shards` sequence of `ShardInfo`, for the index and for a writing report."""

    shards: Sequence[ShardInfo]

    @property
    def num_samples(self) -> int:
        return sum(shard.num_samples for shard in self.shards)

    @property
    def num_images(self) -> int:
        return sum(shard.num_images for shard in self.shards)


@dataclass(frozen=True)
class ShardIndex(ShardTotals):
    """The contents of ``shards.json``; `root` is the folder the shard names are relative to."""

    root: Path
    kind: str
    shards: tuple[ShardInfo, ...]

    def path(self, shard: int) -> Path:
        return self.root / self.shards[shard].name

    def check_files(self) -> None:
        """Every tar is there, else `FileNotFoundError` naming the first missing one (a stat each, no reading)."""
        missing = [self.path(i) for i in range(len(self.shards)) if not self.path(i).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: shard not found ({len(missing)} of {len(self.shards)} missing)")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShardIndex:
        """Read an index from a ``shards.json`` file or the folder that holds one."""
        path = Path(path)
        if path.is_dir():
            path = path / INDEX_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no shard index; write one with `mixkit data shards` (write_shards)")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
            raise ValueError(f"{path}: not a {INDEX_FORMAT} v{INDEX_VERSION} index")
        shards = tuple(ShardInfo(**shard) for shard in data["shards"])
        return cls(path.parent, data["kind"], shards)


# --------------------------------------------------------------------------- locating


_RANGE = re.compile(r"([0-9]+)\.\.([0-9]+)")


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard patterns: ``{000000..000009}`` counts, keeping the zero padding; ``{a,b}`` lists.

    Groups multiply out left to right and may nest (``{a,b{1..2}}``); text without braces is
    returned as it is. Unbalanced braces, or a group that is neither form, raise `ValueError`.
    """
    group = _first_group(pattern)
    if group is None:
        return [pattern]
    start, end = group
    head, body, tail = pattern[:start], pattern[start + 1:end], pattern[end + 1:]
    return [head + choice + rest for choice in _choices(body, pattern) for rest in expand_braces(tail)]


def _first_group(pattern: str) -> tuple[int, int] | None:
    """Where the first ``{`` and its matching ``}`` are."""
    depth, start = 0, 0
    for i, char in enumerate(pattern):
        if char == "{":
            start, depth = (i if depth == 0 else start), depth + 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return start, i
            if depth < 0:
                break
    if depth == 0:
        return None
    raise ValueError(f"unbalanced braces in shard pattern {pattern!r}")


def _choices(body: str, pattern: str) -> list[str]:
    numbers = _RANGE.fullmatch(body)
    if numbers:
        first, last = numbers.groups()
        # Padded as written: {000000..000009} gives 000000, not 0 (braceexpand's and WebDataset's rule).
        width = max(len(first), len(last)) if first.startswith("0") or last.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        return [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    parts = _split_top_level(body)
    if len(parts) < 2:
        raise ValueError(f"{{{body}}} in shard pattern {pattern!r} is neither a range a..b nor a list a,b")
    return [choice for part in parts for choice in expand_braces(part)]


def _split_top_level(body: str) -> list[str]:
    """`body` split at the commas outside nested braces."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(body):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    return parts + [body[start:]]


def resolve_shards(spec: str | os.PathLike) -> ShardIndex:
    """The shards that `spec` names, with their sample counts; every tar is checked to exist.

    `spec` is a folder or ``shards.json`` written by `write_shards`, or tar paths: one
    ``.tar`` or a brace pattern (`expand_braces`) such as ``DIR/shard-{000000..000009}.tar``.
    A tar's counts come from a ``shards.json`` beside it when that lists it; other tars are
    counted by reading them once. Problems raise `FileNotFoundError` / `ValueError` naming the path.
    """
    text = os.fspath(spec)
    if "{" in text or text.endswith(".tar"):
        index = _index_of_tars([Path(name) for name in expand_braces(text)])
    else:
        index = ShardIndex.load(text)
    index.check_files()
    return index


def _index_of_tars(paths: list[Path]) -> ShardIndex:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such shard ({len(missing)} of the {len(paths)} named are missing)")
    listed = {folder: _listed_shards(folder) for folder in {path.parent for path in paths}}
    unlisted = [path for path in paths if path.name not in listed[path.parent]]
    if unlisted:
        logger.info("%d of %d shards are not listed in a %s beside them (e.g. %s): counting their samples by "
                    "reading each once", len(unlisted), len(paths), INDEX_NAME, unlisted[0])
    found = [listed[path.parent].get(path.name) or _count_tar(path) for path in paths]
    kinds = sorted({kind for _, kind in found})
    if len(kinds) != 1:
        raise ValueError(f"{paths[0]}: the tars named hold different kinds of samples ({', '.join(kinds)})")
    root = Path(os.path.commonpath([path.parent for path in paths]))
    shards = tuple(replace(info, name=path.relative_to(root).as_posix()) for path, (info, _) in zip(paths, found))
    return ShardIndex(root, kinds[0], shards)


def _listed_shards(folder: Path) -> dict[str, tuple[ShardInfo, str]]:
    """The tars a ``shards.json`` in `folder` lists: name -> (counts, kind); empty without one."""
    if not (folder / INDEX_NAME).is_file():
        return {}
    index = ShardIndex.load(folder)
    return {info.name: (info, index.kind) for info in index.shards}


def _count_tar(path: Path) -> tuple[ShardInfo, str]:
    images = samples = 0
    kinds: set[str] = set()
    with open_tar(path) as tar:
        for key, members in grouped_members(tar):
            records = read_meta(tar, members, f"{path}:{key}")["records"]
            images, samples = images + 1, samples + len(records)
            kinds.update(_record_kind(record) for record in records[:1])
    if len(kinds) != 1:
        raise ValueError(f"{path}: no mixkit samples in it, or samples of several kinds ({', '.join(sorted(kinds))})")
    return ShardInfo(path.name, images, samples, path.stat().st_size), kinds.pop()


def _record_kind(record: dict[str, Any]) -> str:
    """The kind of a stored record, by its fields (the schemas of `mixkit.data.validation`)."""
    if "question" in record:
        return "vqa_train" if "answer" in record else "vqa_eval"
    return "caption_train" if isinstance(record.get("caption"), str) else "caption_eval"
