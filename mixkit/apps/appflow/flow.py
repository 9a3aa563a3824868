"""`Appflow`: PaddleMIX's one-call applications on `transformers` and `diffusers`.

    task = Appflow(app="openset_det_sam", models=["IDEA-Research/grounding-dino-tiny", "facebook/sam-vit-huge"])
    out = task(image=image, prompt="dog")          # out["boxes"], out["labels"], out["scores"], out["seg_masks"]

One dictionary passes through the app's steps in order; each step reads its keys and adds or replaces keys;
the whole dictionary is returned. App parameters (`box_threshold`, `guidance_scale`, ...) take the app's
defaults, then the values given to `Appflow(...)`, then those given to the call. Unlike PaddleMIX's, `help()`
and `list()` work.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from mixkit.apps.appflow.models import ChosenModel, resolve
from mixkit.apps.appflow.registry import all_apps, get_app
from mixkit.apps.appflow.spec import AppSpec
from mixkit.apps.appflow.step import Step


def _build_step(chosen: ChosenModel, device: str | None) -> Step:
    module, _, name = chosen.model.step.partition(":")
    try:
        step_class = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{chosen.model.name} needs {error.name!r}: install the apps extra, pip install \"mixkit[apps]\""
        ) from error
    return step_class(chosen.source, device=device, **chosen.model.options)


def describe(spec: AppSpec) -> dict[str, Any]:
    """The app as data: stages with their models (default marked), inputs, outputs, parameters."""
    return {
        "app": spec.name,
        "description": spec.description,
        "stages": [{"role": stage.role, "default": stage.default,
                    "models": [model.name for model in stage.models]} for stage in spec.stages],
        "default_models": spec.default_models(),
        "inputs": list(spec.inputs),
        "outputs": list(spec.outputs),
        "params": dict(spec.params),
        "extra": spec.extra,
        "example": spec.example,
    }


def format_help(spec: AppSpec) -> str:
    info = describe(spec)
    lines = [f"{spec.name}: {spec.description}", f"  inputs:  {', '.join(spec.inputs)}",
             f"  outputs: {', '.join(spec.outputs)}"]
    for stage in info["stages"]:
        models = ", ".join(f"{name}{' (default)' if name == stage['default'] else ''}" for name in stage["models"])
        optional = "" if stage["default"] else " [optional: runs when named]"
        lines.append(f"  {stage['role']}{optional}: {models}")
    if spec.params:
        lines.append("  parameters: " + ", ".join(f"{key}={value!r}" for key, value in spec.params.items()))
    if spec.example:
        lines.append(f"  example: {spec.example}")
    return "\n".join(lines)


class Appflow:
    def __init__(self, app: str, models: Sequence[str] | None = None, device: str | None = None,
                 **params: Any):
        self.spec = get_app(app)
        self._check_params(params)
        self.params = {**self.spec.params, **params}
        self.models = resolve(self.spec, models)  # every file located before any model loads
        self.steps = [_build_step(chosen, device) for chosen in self.models]

    def _check_params(self, params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - set(self.spec.params))
        if unknown:
            raise ValueError(f"app {self.spec.name!r} has no parameter {', '.join(unknown)}; it takes: "
                             f"{', '.join(self.spec.params) or 'none'}")

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        params = {key: inputs.pop(key) for key in list(inputs) if key in self.spec.params}
        params = {**self.params, **params}
        state = dict(inputs)
        for step in self.steps:
            step.check(state)
            state = step(state, params)
        return state

    @staticmethod
    def list() -> list[dict[str, Any]]:
        """Every app as data (see `describe`)."""
        return [describe(spec) for spec in all_apps().values()]

    def help(self) -> str:
        """What this app takes and gives, its stages and the models chosen for them."""
        chosen = "\n".join(f"  running {c.stage.role}: {c.model.name} from {c.source}" for c in self.models)
        return format_help(self.spec) + ("\n" + chosen if chosen else "")

    def task_path(self) -> list[str]:
        """Where each step's model was loaded from, in order (PaddleMIX's `task_path`, working)."""
        return [chosen.source for chosen in self.models]

    @staticmethod
    def tasks() -> list[str]:
        """The app names (PaddleMIX's `tasks`, working)."""
        return list(all_apps())
