"""Reading and writing JSON files: one reader whose errors name the file, one atomic writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonFileError(ValueError):
    """A JSON file that is missing, unreadable or not valid JSON; the message names the file and the spot."""


def read_json(path: str | Path, what: str | None = None) -> Any:
    """Parse a JSON file; every failure is a one-line `JsonFileError` naming `what` (an option) and the path."""
    label = f"{what}: {path}" if what else str(path)
    path = Path(path)
    if not path.is_file():
        raise JsonFileError(f"{label}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise JsonFileError(f"{label}: cannot read: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonFileError(
            f"{label}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None


def write_json(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """Written whole to a temporary name, then renamed, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(data, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")
    scratch.replace(path)
    return path
