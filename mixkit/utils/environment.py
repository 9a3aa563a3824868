"""The environment switches every layer reads: where mixkit keeps files, and whether it may download.

Read on every call rather than frozen at import, so a test or a CLI that sets a variable after
``import mixkit`` is honoured.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE_VALUES = {"1", "true", "yes", "on"}


def mixkit_home() -> Path:
    """``$MIXKIT_HOME``, else ``~/.cache/mixkit``: checkpoints and datasets live below it."""
    return Path(os.environ.get("MIXKIT_HOME") or "~/.cache/mixkit").expanduser()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_VALUES


def offline_env() -> str | None:
    """The environment variable that forces offline mode, if one is set."""
    for name in ("HF_HUB_OFFLINE", "MIXKIT_OFFLINE"):
        if env_flag(name):
            return name
    return None


def downloads_allowed(offline: bool | None = None) -> bool:
    """Whether resolution may download.

    Off unless asked for (``offline=False`` or ``MIXKIT_ALLOW_DOWNLOAD=1``): checkpoints are 4-30 GB and
    datasets larger, and neither a silent download started by a ``predict`` call nor a connectivity probe that
    hangs on an air-gapped node is better than an immediate error carrying the command to run.
    ``HF_HUB_OFFLINE``/``MIXKIT_OFFLINE`` win even over ``offline=False``: they are the operator's switch, and
    huggingface_hub refuses to download under the first anyway.
    """
    if offline_env() is not None:
        return False
    if offline is not None:
        return not offline
    return env_flag("MIXKIT_ALLOW_DOWNLOAD")
