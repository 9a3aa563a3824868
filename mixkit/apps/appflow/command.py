"""`mixkit app list [--json]` and `mixkit app run APP [--models ...] [--image X] [--prompt P] [--KEY VALUE ...]
[--seed S] --output DIR [--json]`.

Results go to stdout (one JSON object with `--json`: the text fields, `boxes` as [[x0, y0, x1, y1], ...] float
pixels, `labels`, `scores`, and the paths of the files written), logs to stderr. Bad input, a missing model or a
missing extra is one line on stderr and exit code 2. `auto_label` with a folder as `--image` labels the whole
folder into a COCO file (`mixkit.apps.appflow.autolabel`), sharded under torchrun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mixkit.apps.appflow.options import AppRunConfig, AppUsageError, parse_app_options
from mixkit.apps.appflow.registry import all_apps, get_app
from mixkit.apps.appflow.spec import AppSpec
from mixkit.utils.console import library_output_to_stderr
from mixkit.utils.typed_args import dataclass_from_args

USAGE_ERROR = 2
EXTRA_HINT = 'pip install "mixkit[apps]"'


def list_table(apps: list[dict[str, Any]]) -> str:
    lines = []
    for app in apps:
        lines.append(f"{app['app']}: {app['description']}")
        for stage in app["stages"]:
            models = ", ".join(f"{m}{' (default)' if m == stage['default'] else ''}" for m in stage["models"])
            lines.append(f"  {stage['role']}: {models}")
        lines.append(f"  inputs: {', '.join(app['inputs'])}; outputs: {', '.join(app['outputs'])}")
        if app["params"]:
            lines.append("  parameters: " + ", ".join(f"--{k} {v!r}" for k, v in app["params"].items()))
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    from mixkit.apps.appflow.flow import describe

    apps = [describe(spec) for spec in all_apps().values()]
    print(json.dumps(apps, ensure_ascii=False, indent=2) if args.json else list_table(apps))
    return 0


def app_inputs(config: AppRunConfig, extra: dict[str, str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {"image": config.image, "prompt": config.prompt, **extra}
    if config.image is not None and not Path(config.image).exists():
        raise AppUsageError(f"--image {config.image}: file not found")
    return {key: value for key, value in inputs.items() if value is not None}


def app_params(spec: AppSpec, config: AppRunConfig, rest: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    params, extra = parse_app_options(rest, spec.params, spec.inputs)
    if config.seed is not None:
        if "seed" not in spec.params:
            raise AppUsageError(f"--seed: app {spec.name!r} draws no random noise")
        params["seed"] = config.seed
    return params, extra


def run_app(config: AppRunConfig, rest: list[str]) -> dict[str, Any] | None:
    """The JSON record of the run (None on the non-zero ranks of a sharded auto_label run)."""
    spec = get_app(config.app)
    params, extra = app_params(spec, config, rest)
    inputs = app_inputs(config, extra)
    if spec.name == "auto_label" and config.image is not None and Path(config.image).is_dir():
        from mixkit.apps.appflow.autolabel import label_folder_command

        return label_folder_command(config, params, inputs)
    from mixkit.apps.appflow.flow import Appflow
    from mixkit.apps.appflow.outputs import write_outputs

    task = Appflow(app=spec.name, models=config.models, device=config.device, **params)
    return write_outputs(task(**inputs), Path(config.output))


def print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, ensure_ascii=False))
        return
    for key, value in record.items():
        if key not in ("image", "files") and value is not None:
            print(f"{key}: {value}")


def run(args: argparse.Namespace, rest: list[str] | None = None) -> int:
    """`mixkit app run`: the record on stdout; errors as one line on stderr, exit code 2."""
    from mixkit.apps.appflow.models import AppModelNotFoundError
    from mixkit.apps.appflow.step import StepInputError

    config = dataclass_from_args(AppRunConfig, args)
    try:
        with library_output_to_stderr():
            record = run_app(config, list(rest or []))
    except ModuleNotFoundError as error:
        hint = "" if EXTRA_HINT in str(error) else f" (install the apps extra: {EXTRA_HINT})"
        print(f"mixkit app run {config.app}: error: {error}{hint}", file=sys.stderr)
        return USAGE_ERROR
    except (AppUsageError, AppModelNotFoundError, StepInputError, FileNotFoundError, ValueError) as error:
        print(f"mixkit app run {config.app}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    if record is not None:
        print_record(record, config.json)
    return 0
