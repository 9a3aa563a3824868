"""Class names and prompt templates for zero-shot classification, shipped as package data.

`imagenet_classnames.json`: OpenAI's 1000 ImageNet-1k class names, in class-index order (two names repeat,
"missile" and "sunglasses", as in OpenAI's list: classes are identified by index, not name).
`openai_imagenet_templates.json`: OpenAI's 80 ImageNet prompt templates, each with one `{}` for the class.

Source of both: OpenAI's notebook `Prompt_Engineering_for_ImageNet.ipynb` (github.com/openai/CLIP, notebooks/),
as published in `open_clip/zero_shot_metadata.py` (`IMAGENET_CLASSNAMES`, `OPENAI_IMAGENET_TEMPLATES`) of the
`open-clip-torch` 3.3.0 wheel on PyPI (MIT licence). The JSON files were written from that module's tuples
(templates called with "{}"); open_clip is not imported at run time.

`--classes` and `--templates` of `mixkit eval zeroshot` accept a JSON file or one of the built-in names below.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

BUILTIN_CLASSES = {"imagenet": "imagenet_classnames.json"}
BUILTIN_TEMPLATES = {"openai-imagenet": "openai_imagenet_templates.json"}


class ZeroShotDataError(ValueError):
    """A class or template list that cannot be used; the message names its source."""


def _packaged(file_name: str) -> list[str]:
    return json.loads(resources.files(__name__).joinpath(file_name).read_text(encoding="utf-8"))


def imagenet_classnames() -> list[str]:
    """OpenAI's 1000 ImageNet class names, index order."""
    return _packaged(BUILTIN_CLASSES["imagenet"])


def openai_imagenet_templates() -> list[str]:
    """OpenAI's 80 ImageNet prompt templates (`str.format` patterns with one `{}`)."""
    return _packaged(BUILTIN_TEMPLATES["openai-imagenet"])


def _string_list(data: object, source: str, what: str) -> list[str]:
    if not isinstance(data, list) or not data or not all(isinstance(item, str) and item.strip() for item in data):
        raise ZeroShotDataError(f"{source}: expected a non-empty JSON list of non-empty {what} strings")
    return data


def check_templates(templates: list[str], source: str) -> list[str]:
    """Every template must hold exactly one `{}` (where the class name goes)."""
    for index, template in enumerate(templates):
        if template.count("{}") != 1:
            raise ZeroShotDataError(f"{source}: template {index} {template!r} must contain exactly one '{{}}'")
    return templates


def _read(name_or_path: str, builtins: dict[str, str], what: str) -> list[str]:
    if name_or_path in builtins:
        return _packaged(builtins[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(builtins))
        raise ZeroShotDataError(f"{name_or_path}: no such {what} file (or built-in name: {known})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ZeroShotDataError(f"{path}: not valid JSON ({error})") from None
    return _string_list(data, str(path), what)


def load_classes(name_or_path: str) -> list[str]:
    """Class names from a JSON list file, or the built-in "imagenet"."""
    return _read(name_or_path, BUILTIN_CLASSES, "class name")


def load_templates(name_or_path: str) -> list[str]:
    """Templates from a JSON list file or the built-in "openai-imagenet"."""
    return check_templates(_read(name_or_path, BUILTIN_TEMPLATES, "template"), name_or_path)


__all__ = ["BUILTIN_CLASSES", "BUILTIN_TEMPLATES", "ZeroShotDataError", "check_templates",
           "imagenet_classnames", "load_classes", "load_templates", "openai_imagenet_templates"]
