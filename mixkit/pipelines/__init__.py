"""The inference layer: load any checkpoint, encode images, generate, score.

Family-neutral entry point: `load_pipeline(name_or_folder)` picks the pipeline class from the catalogue entry
or from the folder's `config.json` (`architectures`, then `model_type`), as `transformers`' Auto classes do.
Evaluation, training hand-offs, the demo, `mixkit predict` and the server call only the public methods of
these pipelines. Importing this package is cheap: each pipeline module loads when first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_pipeline"]


def __getattr__(name: str) -> Any:
    if name == "load_pipeline":
        from mixkit.pipelines.auto import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'mixkit.pipelines' has no attribute {name!r}")
