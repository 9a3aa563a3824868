"""Every AppFlow app, by name: an explicit table built from the app-definition modules (no registration as an
import side effect). Light: data only (see `spec.py`); each app's steps load when it is built.

Apps and default models follow PaddleMIX's `paddlemix/appflow/configuration.py` (snapshot 6afaf05); the
models are the `transformers` / `diffusers` ports of the same checkpoints.
"""

from __future__ import annotations

from mixkit.apps.appflow.spec import AppSpec

# Each module below defines a tuple APPS of AppSpec; add a module here to add its apps.
APP_MODULES: tuple[str, ...] = ("mixkit.apps.appflow.apps_vision", "mixkit.apps.appflow.apps_generation",
                                "mixkit.apps.appflow.apps_audio")


def _load() -> dict[str, AppSpec]:
    import importlib

    apps: dict[str, AppSpec] = {}
    for module in APP_MODULES:
        for spec in importlib.import_module(module).APPS:
            if spec.name in apps:
                raise ValueError(f"app {spec.name!r} is defined twice (in {module})")
            apps[spec.name] = spec
    return apps


def all_apps() -> dict[str, AppSpec]:
    """Every app by name, in definition order."""
    return _load()


def get_app(name: str) -> AppSpec:
    """The app's spec; an unknown name is a ValueError listing the apps."""
    apps = _load()
    if name not in apps:
        raise ValueError(f"unknown app {name!r}; the apps are: {', '.join(apps) or 'none'}")
    return apps[name]
