"""The `mixkit serve` command: load the pipeline, build the app, run uvicorn until SIGINT / SIGTERM.

On SIGTERM uvicorn stops accepting connections and waits (up to --shutdown-timeout) for the requests in
flight; then the app's shutdown lets the model worker finish what is queued, and the process exits 0.
"""

from __future__ import annotations

import argparse
import sys

from mixkit.serve.config import ServeConfig
from mixkit.utils.typed_args import dataclass_from_args

USAGE_ERROR = 2
SERVE_EXTRA = "pip install 'mixkit[serve]'"


def load_app(config: ServeConfig):
    """The app around the pipeline `load_pipeline` gives for the checkpoint (and --task), and the --app apps."""
    from mixkit.pipelines.auto import load_pipeline
    from mixkit.serve.app import create_app
    from mixkit.serve.apps import load_apps

    pipeline = load_pipeline(config.model, task=config.task, device=config.device, fp32=config.fp32)
    apps = load_apps(config.app, config.app_models, config.device) if config.app else {}
    return create_app(pipeline, config, apps)


def run(args: argparse.Namespace) -> int:
    config = dataclass_from_args(ServeConfig, args)
    try:
        import fastapi  # noqa: F401  (checked first: the extra may be missing)
        import uvicorn
    except ImportError as error:
        print(f"mixkit serve: error: {error.name} is not installed; {SERVE_EXTRA}", file=sys.stderr)
        return USAGE_ERROR
    try:
        config.check()
        app = load_app(config)
    except (FileNotFoundError, KeyError, ValueError, ModuleNotFoundError) as error:  # the last: an app's extra
        print(f"mixkit serve: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level,
                timeout_graceful_shutdown=config.shutdown_timeout or None)
    return 0
