"""Reading mixkit's tar shards: members grouped by key (WebDataset's rule), their JSON, their images."""

from __future__ import annotations


import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from mixkit.data.transforms import decode_image


logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- reading


def open_tar(path: Path) -> tarfile.TarFile:
    # Random access ("r:"), not a stream: iterating reads only the 512-byte headers and seeks past the
    # data, so a DataLoader worker pays for the images it decodes, not for every image of the shard.
    try:
        return tarfile.open(path, "r:")
    except tarfile.ReadError as error:
        raise ValueError(f"{path}: not a readable tar file ({error})") from None


def grouped_members(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """(key, {extension: member}) for each run of consecutive files sharing a key, WebDataset's rule."""
    key: str | None = None
    group: dict[str, tarfile.TarInfo] = {}
    for member in tar:
        if not member.isfile():
            continue
        name_key, _, extension = member.name.rsplit("/", 1)[-1].partition(".")
        if name_key != key and group:
            yield key, group  # type: ignore[misc]
            group = {}
        key = name_key
        group[extension] = member
    if group:
        yield key, group  # type: ignore[misc]


def read_meta(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], where: str) -> dict[str, Any]:
    if "json" not in members:
        raise ValueError(f"{where}: no .json file; not a mixkit shard (write shards with `mixkit data shards`)")
    return json.loads(tar.extractfile(members["json"]).read())  # type: ignore[union-attr]


def iter_tar_samples(fileobj: Any) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of a tar opened for reading (seekable)."""
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for key, members in grouped_members(tar):
            yield key, {ext: tar.extractfile(m).read() for ext, m in members.items()}  # type: ignore[union-attr]


def decode_shard_image(data: bytes, where: str) -> Image.Image:
    """Decode image bytes from a shard to RGB; `ImageLoadError` names `where` (``shard.tar:key.jpg``)."""
    return decode_image(io.BytesIO(data), where)
