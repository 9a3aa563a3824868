"""Checks an evaluation runs on its inputs before any model loads: one-line errors, exit code 2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixkit.data.records import lavis_image_id
from mixkit.utils.io import JsonFileError, read_json


class EvalInputError(ValueError):
    """Bad user input (a missing file, a malformed record): one line on stderr, exit code 2."""


def load_json_file(path: Path, what: str) -> Any:
    """A JSON input file; a missing or malformed one is an `EvalInputError` naming the option and the path."""
    try:
        return read_json(path, what)
    except JsonFileError as error:
        raise EvalInputError(str(error)) from None


def check_images_exist(paths: Sequence[Path]) -> None:
    """Before the model loads: a missing image fails in a second, not an hour into the run."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise EvalInputError(f"{len(missing)} image file(s) not found: {shown}")


def record_image_id(record: dict, index: int, source: str) -> int:
    """LAVIS's image id of an eval record; a record without one is an input error naming the file."""
    try:
        return lavis_image_id(record, index)
    except ValueError as error:
        raise EvalInputError(f"{source}: {error}") from None
