"""mixkit.data: image transforms, text cleaning, tokenizers, annotation checks and the datasets.

Where each piece lives:

- `transforms`: image loading and the BLIP-2 eval/train transforms (CLIP mean/std)
- `text`: LAVIS caption/question cleaning; `tokenizers`: tiny tokenizers for tests and demos
- `validation`: record schemas and `validate_annotations`; `records`: per-record rules (image ids)
- `columns`: compact string storage; `datasets`: the map-style caption/VQA datasets
- `bad_images`: skipping unreadable images and the bad-image budget
- `sources`, `download`: the standard-set catalogue and fetching it; `shapes`: the synthetic set
- `loading`: `load_dataset`, also importable as ``from mixkit.data import load_dataset``
- `shards`: tar shards for datasets too large for one file system

`load_dataset` is imported on first use, so ``import mixkit.data.text`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixkit.data.loading import load_dataset

__all__ = ["load_dataset"]


def __getattr__(name: str) -> Any:
    if name == "load_dataset":
        from mixkit.data.loading import load_dataset

        return load_dataset
    raise AttributeError(f"module 'mixkit.data' has no attribute {name!r}")
