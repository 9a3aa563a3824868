"""WebDataset-style tar shards, for datasets too large for one disk or one file system.

`write_shards` turns an annotation file plus its image folder into numbered tar files
and an index (``shards.json``). Each image becomes one tar *sample* under a key
(``000000042``), stored as two files, as WebDataset expects:

- ``{key}.{ext}``: the image file's original bytes (never re-encoded)
- ``{key}.json``:  ``{"image": <relative path>, "records": [...]}``, every record that
  names this image (so a COCO image with 5 captions is stored once, not 5 times)

The shards are plain tars (``tar tf`` lists them; ``webdataset.WebDataset`` reads them),
written deterministically: images sorted by path, fixed mtime/uid/mode, sorted JSON
keys. Same input, same bytes.

`ShardedCaptionDataset` and `ShardedVqaDataset` stream the shards back; `resolve_shards`
finds them from a folder, a ``shards.json`` or a WebDataset brace pattern
(``DIR/shard-{000000..000009}.tar``), and ``mixkit train ... --train_shards`` trains on them.
They read the tars with `tarfile`, not with the `webdataset` library: mixkit needs an
explicit rank/world for tests and launchers, a length known up front, one tar sample
expanding into several dataset samples, batches that do not depend on the worker count,
and a position that survives a resume; doing that inside webdataset's pipeline took more
code than the reader here. No extra dependency is needed.

Each rank reads every `world_size`-th shard, in an order reshuffled each epoch with
``(seed, epoch)``, its records mixed through a seeded buffer. DataLoader workers take whole
batches of that stream in turn, so every sample is read exactly once per epoch and the
order depends only on (seed, epoch, rank, world size), never on the worker count: a resumed
run skips the batches already seen and continues as if never stopped. Samples are the same
dicts as `mixkit.data.datasets` gives, with the same text cleaning; `seed_augmentation`
keys each sample's random crop by (seed, epoch, shard, record position in shard).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixkit.data.shards.index import INDEX_NAME, ShardIndex, ShardInfo, expand_braces, resolve_shards
    from mixkit.data.shards.stream import (ShardedCaptionDataset, ShardedVqaDataset, ShardStreamConfig,
                                           assign_shards, shard_loader)
    from mixkit.data.shards.tar import decode_shard_image, iter_tar_samples
    from mixkit.data.shards.writer import ShardsReport, write_shards

# Public name -> the module that defines it. They load on first use, so that `mixkit.data.shards.options`
# (the `mixkit data shards` parser) imports neither torch nor PIL.
_EXPORTS = {
    **dict.fromkeys(("INDEX_NAME", "ShardIndex", "ShardInfo", "expand_braces", "resolve_shards"), "index"),
    **dict.fromkeys(("ShardedCaptionDataset", "ShardedVqaDataset", "ShardStreamConfig", "assign_shards",
                     "shard_loader"), "stream"),
    **dict.fromkeys(("decode_shard_image", "iter_tar_samples"), "tar"),
    **dict.fromkeys(("ShardsReport", "write_shards"), "writer"),
}

__all__ = ["INDEX_NAME", "ShardIndex", "ShardInfo", "ShardStreamConfig", "ShardedCaptionDataset", "ShardedVqaDataset",
           "ShardsReport", "assign_shards", "decode_shard_image", "expand_braces", "iter_tar_samples",
           "resolve_shards", "shard_loader", "write_shards"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mixkit.data.shards.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mixkit.data.shards' has no attribute {name!r}")
