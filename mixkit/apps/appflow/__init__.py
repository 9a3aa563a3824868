"""AppFlow: PaddleMIX's one-call applications (captioning, open-set detection + segmentation, auto-labelling,
image / video generation, audio) on `transformers` and `diffusers`. See `flow.py`; `mixkit app` runs them."""

from __future__ import annotations

from typing import Any

__all__ = ["Appflow"]


def __getattr__(name: str) -> Any:
    if name == "Appflow":
        from mixkit.apps.appflow.flow import Appflow

        return Appflow
    raise AttributeError(f"module 'mixkit.apps.appflow' has no attribute {name!r}")
