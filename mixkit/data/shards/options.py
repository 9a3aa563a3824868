"""The options of `mixkit data shards`, apart from the writer so that building the parser imports no torch or PIL."""

from __future__ import annotations

import argparse
from pathlib import Path

from mixkit.data.validation import add_annotation_arguments

DEFAULT_PATTERN = "shard-%06d.tar"
DEFAULT_MAX_BYTES = 1 << 30  # ~1 GB: large enough to stream efficiently, small enough to spread over nodes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mixkit data shards``."""
    add_annotation_arguments(parser, image_root_required=True)
    parser.add_argument("--output", required=True, type=Path, help="folder for the tar shards and shards.json")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="most images per shard")
    parser.add_argument("--max-shard-mb", type=float, default=DEFAULT_MAX_BYTES / 1e6,
                        help="about the most megabytes per shard")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN, help="shard file name, with one %%d field")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output")
