"""Which model fills each stage of an app, and where its files are, without downloading by default.

A model is named by its Hub repo (or PaddleMIX's name where the app lists one), by a mixkit catalogue name, or
given as a local folder (recognised by its `config.json` "model_type" or `model_index.json` "_class_name").
A Hub model is looked for in `$MIXKIT_HOME/checkpoints/<repo>`, then in the Hugging Face cache; when neither has
it and downloads are off, the error is one message naming the command that fetches it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mixkit.apps.appflow.spec import AppModel, AppSpec, Stage
from mixkit.utils.environment import downloads_allowed, mixkit_home


class AppModelNotFoundError(FileNotFoundError):
    """A model an app needs is not on this machine; the message says what to fetch and where."""


@dataclass(frozen=True)
class ChosenModel:
    stage: Stage
    model: AppModel
    source: str  # a local folder, or a mixkit catalogue name (resolved by the step)


def folder_kind(directory: Path) -> str | None:
    """`model_type` of a `transformers` folder or `_class_name` of a `diffusers` one."""
    for name, key in (("model_index.json", "_class_name"), ("config.json", "model_type")):
        path = directory / name
        if path.is_file():
            return json.loads(path.read_text()).get(key)
    return None


def _stage_for_folder(spec: AppSpec, directory: Path) -> tuple[Stage, AppModel]:
    kind = folder_kind(directory)
    for stage in spec.stages:
        for model in stage.models:
            if kind is not None and kind in model.kinds:
                return stage, model
    known = sorted({k for stage in spec.stages for model in stage.models for k in model.kinds})
    raise ValueError(f"{directory}: a {kind or 'unrecognised'} folder fills no stage of app {spec.name!r} "
                     f"(it takes: {', '.join(known)})")


def _stage_for_name(spec: AppSpec, name: str) -> tuple[Stage, AppModel]:
    for stage in spec.stages:
        model = stage.find(name)
        if model is not None:
            return stage, model
    raise ValueError(f"app {spec.name!r} has no model {name!r}; its models are: {', '.join(spec.all_models())}")


def local_model_dir(repo: str) -> Path:
    return mixkit_home() / "checkpoints" / repo


def resolve_hub_model(model: AppModel, app: str) -> str:
    """The local folder of a Hub model: `$MIXKIT_HOME/checkpoints/<repo>`, the Hugging Face cache, or (only when
    downloads are allowed) a fresh download; else `AppModelNotFoundError` with the command to run."""
    assert model.hf_repo is not None
    target = local_model_dir(model.hf_repo)
    if target.is_dir():
        return str(target)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return str(snapshot_download(model.hf_repo, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    if downloads_allowed():
        return str(snapshot_download(model.hf_repo))
    raise AppModelNotFoundError(
        f"app {app!r} needs {model.name} ({model.hf_repo}), which is not on this machine. Fetch it with "
        f"`hf download {model.hf_repo} --local-dir {target}` (or set MIXKIT_ALLOW_DOWNLOAD=1), or pass a local "
        "folder in models=[...] / --models.")


def choose_models(spec: AppSpec, models: Sequence[str] | None) -> list[tuple[Stage, AppModel, str | None]]:
    """(stage, model, local folder or None) per stage that runs, in stage order: the named models, then each
    uncovered stage's default. Nothing is resolved yet."""
    chosen: dict[str, tuple[Stage, AppModel, str | None]] = {}
    for given in models or ():
        path = Path(given).expanduser()
        stage, model = _stage_for_folder(spec, path) if path.is_dir() else _stage_for_name(spec, given)
        if stage.role in chosen:
            raise ValueError(f"app {spec.name!r}: two models given for its {stage.role} stage "
                             f"({chosen[stage.role][1].name} and {given})")
        chosen[stage.role] = (stage, model, str(path) if path.is_dir() else None)
    runs = []
    for stage in spec.stages:
        if stage.role in chosen:
            runs.append(chosen[stage.role])
        elif stage.default is not None:
            runs.append((stage, stage.find(stage.default), None))
    return runs


def resolve(spec: AppSpec, models: Sequence[str] | None) -> list[ChosenModel]:
    """Every stage's model with its files located (missing ones fail here, before any model loads)."""
    resolved = []
    for stage, model, folder in choose_models(spec, models):
        if folder is None and model.hf_repo is None:
            from mixkit.models.hub import resolve_checkpoint

            resolve_checkpoint(model.name)  # a missing catalogue checkpoint fails now, with what to fetch
        source = folder or (resolve_hub_model(model, spec.name) if model.hf_repo else model.name)
        resolved.append(ChosenModel(stage, model, source))
    return resolved
