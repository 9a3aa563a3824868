"""Standard datasets on disk: where they live, what is missing, and fetching it when allowed.

Every standard set (`mixkit.data.sources`) lives in ``$MIXKIT_HOME/datasets/<name>/``.
`ensure_standard_files` returns that folder once a split's files are there; if some are
missing it downloads them only when allowed (``MIXKIT_ALLOW_DOWNLOAD=1`` or
``allow_download=True``), else raises `DatasetNotFoundError` listing each URL and where
it goes. Downloads are checksummed and renamed into place, so a file that exists is whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from mixkit.utils.progress import progress_bar

from mixkit.data.sources import DatasetSource, RemoteFile
from mixkit.utils.environment import downloads_allowed, mixkit_home


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk and may not be downloaded; the message says what to fetch."""


def datasets_home() -> Path:
    """``$MIXKIT_HOME/datasets``: standard sets live in ``<name>/`` below it."""
    return mixkit_home() / "datasets"


def _open_url(url: str) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - catalogue URLs only


def _hash_matches(path: Path, digest: str, algorithm: str) -> bool:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest() == digest


def download_file(url: str, dest: Path, md5: str | None = None, sha256: str | None = None,
                  progress: bool = True) -> Path:
    """Download to ``dest.part``, verify the checksum when one is known, then rename into place.

    The rename is atomic, so `dest` either is complete or does not exist: an interrupted
    download never passes for a finished one.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _open_url(url) as response, part.open("wb") as out:
        total = int(getattr(response, "headers", {}).get("Content-Length") or 0) or None
        with progress_bar(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
    for algorithm, digest in (("md5", md5), ("sha256", sha256)):
        if digest is not None and not _hash_matches(part, digest, algorithm):
            part.unlink()
            raise OSError(f"{algorithm} mismatch for {url}: the download is corrupt, try again")
    os.replace(part, dest)
    return dest


def _extract_archive(archive: Path, target: Path) -> None:
    """Unzip `archive` and move its `target.name` folder into place in one rename."""
    staging = target.parent / f".extracting-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(staging)
    if not (staging / target.name).is_dir():
        raise OSError(f"{archive} holds no top-level {target.name}/ folder")
    os.replace(staging / target.name, target)
    shutil.rmtree(staging)


def fetch_remote(file: RemoteFile, folder: Path, progress: bool = True) -> None:
    """Bring one catalogue file into `folder` (downloading, verifying, extracting archives)."""
    target = folder / file.target
    if not file.archive:
        download_file(file.url, target, file.md5, file.sha256, progress)
        return
    archive = download_file(file.url, folder / "downloads" / file.filename, file.md5, file.sha256, progress)
    _extract_archive(archive, target)
    archive.unlink()  # the COCO zips alone are ~20 GB


def _required_files(source: DatasetSource, split: str) -> tuple[RemoteFile, ...]:
    if split not in source.annotations:
        raise ValueError(f"{source.name} has no split {split!r}; it has {', '.join(source.splits)}")
    return source.annotations[split] + source.images[split]


def _not_found_message(source: DatasetSource, split: str, folder: Path, missing: list[RemoteFile]) -> str:
    lines = [f"{source.name} ({split}) is not in {folder}. Fetch these files:"]
    for file in missing:
        checksum = f" (md5 {file.md5})" if file.md5 else ""
        action = "unzip into" if file.archive else "save as"
        where = folder / file.target
        lines.append(f"  {file.url}{checksum}\n      -> {action} {where.parent if file.archive else where}")
    lines.append("or set MIXKIT_ALLOW_DOWNLOAD=1 (or pass allow_download=True) to download them, "
                 "or point data_files/image_root at copies you have.")
    return "\n".join(lines)


def ensure_standard_files(source: DatasetSource, split: str, allow_download: bool | None = None) -> Path:
    """The dataset's folder, with the split's files present; download them only if allowed."""
    folder = datasets_home() / source.name
    missing = [f for f in _required_files(source, split) if not (folder / f.target).exists()]
    if not missing:
        return folder
    allowed = downloads_allowed(None if allow_download is None else not allow_download)
    if not allowed:
        raise DatasetNotFoundError(_not_found_message(source, split, folder, missing))
    for file in missing:
        fetch_remote(file, folder)
    return folder
