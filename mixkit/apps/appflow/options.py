"""The options of `mixkit app list` and `mixkit app run`, apart from the code that runs them (no torch, PIL or
`transformers` here, so `mixkit --help` stays fast). App parameters (`--box_threshold 0.35`, ...) are not
declared: they are the app's own names, parsed by `parse_app_options` with types from the app's defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixkit.utils.typed_args import add_dataclass_arguments


class AppUsageError(ValueError):
    """Bad command-line input, reported as one line and exit code 2."""


@dataclass(kw_only=True)
class AppListConfig:
    json: bool = field(default=False, metadata={"help": "print one JSON array instead of a table"})


@dataclass(kw_only=True)
class AppRunConfig:
    app: str = field(metadata={"cli": False})  # the positional APP
    models: list[str] | None = field(default=None, metadata={
        "help": "the models, by name or local folder, one per stage (default: the app's default models)",
        "metavar": "MODEL"})
    image: str | None = field(default=None, metadata={
        "help": "the input image (auto_label: an image or a folder of images)", "metavar": "PATH"})
    prompt: str | None = field(default=None, metadata={"help": "the text prompt", "metavar": "TEXT"})
    seed: int | None = field(default=None, metadata={
        "help": "seed of the CPU torch.Generator drawing the initial noise (one seed, one image on any device)"})
    output: Path = field(metadata={"help": "folder the images, masks, video and audio are written to",
                                   "metavar": "DIR"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if there)"})
    json: bool = field(default=False, metadata={"help": "print one JSON object (text, boxes, labels, scores, "
                                                        "paths of the files written)"})


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, AppListConfig)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="APP", help="the app (see `mixkit app list`)")
    add_dataclass_arguments(parser, AppRunConfig)
    parser.epilog = ("App parameters and extra inputs go as --KEY VALUE with the app's own names (e.g. "
                     "--box_threshold 0.35, --negative_prompt TEXT); `mixkit app list` shows them.")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def convert_value(key: str, text: str, default: Any) -> Any:
    """`text` as the type of the app's default for `key` (bool, int, float; str for str or None defaults)."""
    kind = type(default)
    try:
        if kind is bool:
            return _parse_bool(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError as error:
        raise AppUsageError(f"--{key}: {error}") from None
    if default is None and not key.endswith(("prompt", "text")):
        return _number_or_text(text)  # an optional number (height, width, ...) or text
    return text


def _number_or_text(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split_key(token: str) -> tuple[str, str | None]:
    key, _, value = token[2:].partition("=")
    return key.replace("-", "_"), (value if "=" in token else None)


def parse_app_options(rest: list[str], params: dict[str, Any], inputs: tuple[str, ...]) -> tuple[dict, dict]:
    """(params, extra inputs) from `--KEY VALUE` / `--KEY=VALUE` tokens; an unknown key or a missing value is an
    AppUsageError naming it and the keys the app takes."""
    known_inputs = [key for key in inputs if key not in ("image", "prompt")]
    values: dict[str, Any] = {}
    extra_inputs: dict[str, str] = {}
    tokens = list(rest)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--") or len(token) < 3:
            raise AppUsageError(f"unexpected argument {token!r}: app options are --KEY VALUE")
        key, value = _split_key(token)
        if value is None:
            if not tokens or tokens[0].startswith("--"):
                raise AppUsageError(f"--{key}: a value is needed")
            value = tokens.pop(0)
        if key in params:
            values[key] = convert_value(key, value, params[key])
        elif key in known_inputs:
            extra_inputs[key] = value
        else:
            accepted = ", ".join(f"--{name}" for name in [*params, *known_inputs]) or "none"
            raise AppUsageError(f"unknown option --{key}; this app takes: {accepted}")
    return values, extra_inputs
