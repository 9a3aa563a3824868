"""The library versions that decide numerical results, saved beside every model folder and metrics file."""

from __future__ import annotations


def library_versions() -> dict[str, str]:
    import torch
    import transformers

    from mixkit import __version__

    return {"mixkit": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
