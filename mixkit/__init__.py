"""mixkit: a PyTorch toolkit for multimodal large models (BLIP-2 and the BLIP family)."""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__version__ = "0.1.0"

# The `transformers` releases whose BLIP-2 key names, image-token convention and generation semantics mixkit
# is tested against. Upgrades have silently changed outputs before (LAVIS#500, transformers#38858).
SUPPORTED_TRANSFORMERS = (5, 6)


def __getattr__(name: str) -> Any:
    # The public entry points load on first use, so `import mixkit` (and `mixkit --help`) stays light.
    if name == "load_pipeline":
        from mixkit.pipelines.auto import load_pipeline

        return load_pipeline
    if name == "Appflow":
        from mixkit.apps.appflow.flow import Appflow

        return Appflow
    if name == "library_versions":
        from mixkit.utils.versions import library_versions

        return library_versions
    raise AttributeError(f"module 'mixkit' has no attribute {name!r}")


def _check_transformers_version() -> None:
    try:
        installed = version("transformers")
    except PackageNotFoundError:
        return
    major = int(installed.split(".")[0])
    if not SUPPORTED_TRANSFORMERS[0] <= major < SUPPORTED_TRANSFORMERS[1]:
        warnings.warn(
            f"mixkit is tested with transformers>={SUPPORTED_TRANSFORMERS[0]},<{SUPPORTED_TRANSFORMERS[1]}; "
            f"found {installed}: checkpoint keys and generation results may differ",
            stacklevel=2,
        )


_check_transformers_version()
