"""Running one `mixkit eval` command: typed config in, metrics table (stderr) and JSON (stdout) out.

Bad input is one line on stderr and exit code 2; the process group is always torn down.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mixkit.data.transforms import ImageLoadError
from mixkit.eval.inputs import EvalInputError
from mixkit.eval.result_files import ResultFileError
from mixkit.models.settings import GenerationSettings
from mixkit.utils.distributed import DistContext, close_distributed, init_distributed
from mixkit.utils.typed_args import add_dataclass_arguments, dataclass_from_args

USAGE_ERROR = 2
T = TypeVar("T")


def run_evaluation(command: str, evaluate: Callable[[Any, DistContext], dict | None], config: Any,
                   score_table: Callable[[dict], str], input_errors: tuple[type[Exception], ...] = ()) -> int:
    """`evaluate(config, ctx)` inside the torchrun process group; rank 0 prints the table and the metrics."""
    ctx = init_distributed()
    try:
        metrics = evaluate(config, ctx)
    except (EvalInputError, ResultFileError, ImageLoadError, *input_errors) as error:
        print(f"mixkit eval {command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    finally:
        close_distributed(ctx)
    if metrics is not None:
        print(score_table(metrics), file=sys.stderr)
        print(json.dumps(metrics))
    return 0


def check_config(config: Any) -> None:
    """The config's own checks (`config.check()`), as input errors."""
    try:
        config.check()
    except ValueError as error:
        raise EvalInputError(str(error)) from None


def load_model(loader: Callable[[], T], model: str) -> T:
    """`loader()`; a missing or unusable checkpoint is an input error naming `--model`."""
    try:
        return loader()
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise EvalInputError(f"--model {model}: {error}") from None


def generation_settings(config: Any, base: GenerationSettings) -> GenerationSettings:
    """The checkpoint's reference settings with the command's overrides; impossible ones are input errors."""
    try:
        return config.apply(base)
    except ValueError as error:
        raise EvalInputError(str(error)) from None


def standalone_main(config_type: type, run: Callable[[argparse.Namespace], int], command: str,
                    description: str, argv: Sequence[str] | None = None) -> int:
    """`python -m mixkit.eval.<task>_eval` (what torchrun launches): the same options as `mixkit eval <task>`."""
    parser = argparse.ArgumentParser(prog=f"mixkit eval {command}", description=description)
    add_dataclass_arguments(parser, config_type)
    return run(parser.parse_args(argv))


__all__ = ["USAGE_ERROR", "check_config", "dataclass_from_args", "generation_settings", "load_model", "run_evaluation",
           "standalone_main"]
