"""mixkit: a PyTorch toolkit for multimodal large models (BLIP-2 and the BLIP family)."""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version

__version__ = "0.1.0"

# The `transformers` releases whose BLIP-2 key names, image-token convention and generation semantics mixkit
# is tested against. Upgrades have silently changed outputs before (LAVIS#500, transformers#38858).
SUPPORTED_TRANSFORMERS = (5, 6)


def library_versions() -> dict[str, str]:
    """The versions that decide numerical results, saved beside every model folder and metrics file."""
    import torch
    import transformers

    return {"mixkit": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


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
