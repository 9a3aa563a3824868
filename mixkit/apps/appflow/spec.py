"""What an AppFlow app is, as plain data: its stages, the models each stage can run, its inputs, outputs and
parameters. Light (no torch), so `mixkit app list` and the parser stay fast.

As in PaddleMIX's AppFlow, one dictionary passes through the app's steps in order; each step reads its keys and
adds or replaces keys, and the whole dictionary is returned. Unlike PaddleMIX (whose `models` must each be a key
of the app and whose default is a single model), an app here is a sequence of *stages*; each stage lists the
models that can fill it, one of them the default. `models=[...]` names models by stage; a stage that no given
model fills takes its default; an optional stage (no default) runs only when one of its models is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AppModel:
    """A model an app stage can run: its name (a Hub repo, a mixkit catalogue name, or PaddleMIX's name),
    where its weights come from, and the step class that runs it."""

    name: str
    step: str  # "module:Class" of the `Step` that runs it; imported only when the app is built
    hf_repo: str | None = None  # None: a mixkit catalogue name, resolved by the catalogue
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # fixed keyword arguments of the step
    # How a local folder is recognised as this kind of model: `config.json` "model_type" values or
    # `model_index.json` "_class_name" values (diffusers pipelines).
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    role: str  # e.g. "detector", "segmenter", "captioner", "generator"
    models: tuple[AppModel, ...]
    default: str | None  # the default model's name; None: an optional stage, run only when named

    def __post_init__(self) -> None:
        names = [model.name for model in self.models]
        if self.default is not None and self.default not in names:
            raise ValueError(f"stage {self.role}: default {self.default!r} is not one of {names}")

    def find(self, name: str) -> AppModel | None:
        return next((model for model in self.models if model.name == name), None)


@dataclass(frozen=True)
class AppSpec:
    name: str
    description: str
    stages: tuple[Stage, ...]
    inputs: tuple[str, ...]  # keys the caller gives (PaddleMIX's names)
    outputs: tuple[str, ...]  # keys the app adds
    params: dict[str, Any] = field(default_factory=dict)  # app parameters and their defaults (PaddleMIX's)
    extra: str = "apps"  # the pip extra its libraries come with
    example: str = ""  # one `mixkit app run` line for the README and help()

    def default_models(self) -> list[str]:
        return [stage.default for stage in self.stages if stage.default is not None]

    def all_models(self) -> list[str]:
        return [model.name for stage in self.stages for model in stage.models]
