"""Command-line options from dataclass fields: one typed config per command, no `argparse.Namespace` below.

`add_dataclass_arguments(parser, Config)` adds one `--kebab-case` option per field (help from the field's
`metadata["help"]`, required when the field has no default); `dataclass_from_args(Config, namespace)` builds
the config back. Like `transformers.HfArgumentParser`, but without importing `transformers`, so `--help`
stays fast, and with the hyphenated option names mixkit's commands use.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")
_SCALARS = (str, int, float, Path)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _option_kwargs(field: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    inner, _ = _unwrap_optional(annotation)
    kwargs: dict[str, Any] = {"help": field.metadata.get("help", "")}
    for key in ("choices", "metavar"):
        if key in field.metadata:
            kwargs[key] = field.metadata[key]
    has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    if inner is bool:
        if field.default is not False:
            raise TypeError(f"{field.name}: boolean options are flags and must default to False")
        return {**kwargs, "action": "store_true"}
    if typing.get_origin(inner) in (list, tuple):
        (item,) = set(typing.get_args(inner)) - {Ellipsis}
        kwargs.update(nargs="+", type=item)
    elif inner in _SCALARS:
        kwargs["type"] = inner
    else:
        raise TypeError(f"{field.name}: unsupported option type {annotation!r}")
    if has_default:
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        return {**kwargs, "default": default}
    return {**kwargs, "required": True}


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_type: type) -> None:
    """One option per field of `config_type` (fields with `metadata={"cli": False}` are left out)."""
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if field.metadata.get("cli", True):
            parser.add_argument(option_name(field.name), dest=field.name,
                                **_option_kwargs(field, hints[field.name]))


def dataclass_from_args(config_type: type[ConfigT], namespace: argparse.Namespace, **overrides: Any) -> ConfigT:
    """The config whose fields are the namespace's values of the same names (others ignored)."""
    names = {field.name for field in dataclasses.fields(config_type)}
    values = {name: value for name, value in vars(namespace).items() if name in names}
    return config_type(**{**values, **overrides})  # type: ignore[call-arg]


def parse_config(config_type: type[ConfigT], argv: list[str] | None, prog: str, description: str) -> ConfigT:
    """A standalone parser for one config (what `python -m mixkit.eval.vqa_eval` under torchrun uses)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_dataclass_arguments(parser, config_type)
    return dataclass_from_args(config_type, parser.parse_args(argv))
