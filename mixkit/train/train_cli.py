"""`mixkit train STAGE [--config FILE] [--key value ...]`: the article's training commands.

A recipe file (YAML or JSON, see `configs/`) gives the settings; options on the command line override it.
Single process: `mixkit train blip2-stage1 --config configs/blip2_stage1.yaml`. Many GPUs or nodes: the same
arguments under `torchrun --nproc_per_node N -m mixkit.train.train_cli blip2-stage1 ...` (PyTorch DDP through
the Trainer; `--sharding_parallel_degree N` shards parameters, gradients and optimizer state with torch's FSDP2,
`--deepspeed configs/deepspeed_zero2.json` runs DeepSpeed ZeRO-2). Nodes: one `torchrun --nnodes M --node_rank I
--rdzv-backend c10d --rdzv-endpoint HOST:PORT` per node.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mixkit.train.arguments import default_report_to, Blip2TrainingArguments, DataArguments, ModelArguments
from mixkit.train.train_options import add_arguments  # the parser's options, light for `mixkit --help`

logger = logging.getLogger(__name__)
USAGE_ERROR = 2


class TrainConfigError(ValueError):
    """A recipe or option that cannot run: reported before any training starts."""


def recipe_arguments(path: str | Path) -> list[str]:
    """A recipe file as command-line arguments (`--key value`), so the command line can override it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise TrainConfigError(f"{path}: cannot read the recipe: {error}") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: a recipe is a mapping of option names to values")
    data.pop("stage", None)
    arguments: list[str] = []
    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        arguments += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return arguments


def recipe_stage(path: str | Path) -> str | None:
    path = Path(path)
    data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    return data.get("stage") if isinstance(data, dict) else None


def hf_parser():
    from transformers import HfArgumentParser

    # No abbreviations: a misspelt recipe key must fail, not silently set a different option.
    return HfArgumentParser((ModelArguments, DataArguments, Blip2TrainingArguments), allow_abbrev=False)


def parse(stage: str, config: str | None, rest: Sequence[str]):
    argv = ["--report_to", default_report_to()] + (recipe_arguments(config) if config else []) + list(rest)
    try:
        model_args, data_args, train_args = hf_parser().parse_args_into_dataclasses(args=argv)
    except SystemExit as error:
        raise TrainConfigError(f"bad options for {stage} (see `mixkit train {stage} --help`)") from error
    except ValueError as error:  # options no dataclass knows (a misspelt key)
        raise TrainConfigError(f"bad options for {stage}: {error}") from None
    check_parallelism(train_args)
    check_frozen_dtype(model_args, train_args)
    resolve_resume(train_args)
    return model_args, data_args, train_args


def check_parallelism(args: Blip2TrainingArguments) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.sharding_parallel_degree not in (1, world):
        raise TrainConfigError(
            f"--sharding_parallel_degree {args.sharding_parallel_degree}: FSDP shards over all {world} "
            "processes; set it to 1 or to the number of processes torchrun starts")
    if args.sharding_parallel_degree > 1 and (args.fsdp or args.deepspeed):
        raise TrainConfigError(
            f"--sharding_parallel_degree {args.sharding_parallel_degree} (FSDP2) cannot be combined with "
            f"{'--fsdp' if args.fsdp else '--deepspeed'}: pick one way to shard")
    if args.tensor_parallel_degree > 1:
        raise TrainConfigError(
            f"--tensor_parallel_degree {args.tensor_parallel_degree}: the OPT and T5 language models have no "
            "tensor-parallel plan in transformers; use --sharding_parallel_degree (FSDP) to spread memory")


def check_frozen_dtype(model_args: ModelArguments, args: Blip2TrainingArguments) -> None:
    if model_args.frozen_dtype == "fp32":
        return
    if not model_args.save_trainable_only:
        raise TrainConfigError("--frozen_dtype bf16 needs --save_trainable_only true: the frozen weights would be "
                               "saved in bf16")
    if args.sharding_parallel_degree > 1 or args.fsdp or args.deepspeed:
        # FSDP and ZeRO flatten parameters into buffers of one dtype.
        raise TrainConfigError("--frozen_dtype bf16 runs under DDP or one process; with FSDP or DeepSpeed use "
                               "--bf16 (autocast) instead")


def resolve_resume(args: Blip2TrainingArguments) -> None:
    """`--resume_from_checkpoint last` (or true): the newest checkpoint that finished saving."""
    from mixkit.train.trainer import last_complete_checkpoint

    if str(args.resume_from_checkpoint).lower() in ("last", "true"):
        found = last_complete_checkpoint(args.output_dir)
        args.resume_from_checkpoint = str(found) if found else None
        logger.info("resuming from %s", found or "scratch (no complete checkpoint yet)")


def parallelism(trainer: Any) -> str:
    """What actually ran, named from the trainer's state (not from the options asked for)."""
    world = trainer.args.world_size
    nodes = world // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))  # torchrun sets it on every node
    where = f"{world} processes" + (f" on {nodes} nodes" if nodes > 1 else "")
    if getattr(trainer, "is_sharded", False):
        return f"FSDP2 (fully_shard) over {where}"
    if trainer.is_deepspeed_enabled:
        stage = trainer.accelerator.state.deepspeed_plugin.zero_stage
        return f"DeepSpeed ZeRO-{stage} over {where}"
    if trainer.is_fsdp_enabled:
        return f"FSDP (accelerate) over {where}"
    return f"DDP over {where}" if world > 1 else "single process"


def summary_table(stage: str, result: Any, skipped: str, output_dir: str, seconds: float, layout: str) -> str:
    metrics = result.metrics
    rows = [
        ("stage", stage),
        ("parallelism", layout),
        ("steps", str(result.global_step)),
        ("epochs", f"{metrics.get('epoch', 0):.2f}"),
        ("mean training loss", f"{result.training_loss:.4f}"),
        ("samples/s", f"{metrics.get('train_samples_per_second', 0):.2f}"),
        ("wall time", f"{seconds:.1f} s"),
        ("unreadable images", skipped),
        ("model folder", output_dir),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def train(stage: str, model_args: ModelArguments, data_args: DataArguments,
          train_args: Blip2TrainingArguments) -> Any:
    from mixkit.data.bad_images import BadImageBudget
    from mixkit.train.memory import plan_memory
    from mixkit.train.stages import build_stage
    from mixkit.train.trainer import Blip2Trainer

    parts = build_stage(stage, model_args, data_args, seed=train_args.seed)
    checkpointing = bool(train_args.gradient_checkpointing or getattr(train_args, "activation_checkpointing", False))
    if checkpointing:
        parts.model.set_gradient_checkpointing(True)
        # ours, not the Trainer's: the model is no PreTrainedModel
        train_args.gradient_checkpointing = False
        if hasattr(train_args, "activation_checkpointing"):
            train_args.activation_checkpointing = False
    plan_memory(stage, parts.model, data_args, train_args, checkpointing)  # may stop: does not fit
    trainer = Blip2Trainer(
        model=parts.model, args=train_args, train_dataset=parts.dataset, data_collator=parts.collator,
        task=parts.task, batch_type=parts.batch_type, base_model=parts.base_model, save_extras=parts.save_extras,
        bad_images=BadImageBudget(max_fraction=data_args.max_bad_image_fraction), progress_name=stage,
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=train_args.resume_from_checkpoint)
    trainer.save_model(train_args.output_dir)
    if trainer.is_world_process_zero():
        print(summary_table(stage, result, trainer.bad_images.summary(), train_args.output_dir,
                            time.perf_counter() - start, parallelism(trainer)), file=sys.stderr)
    from mixkit.utils.distributed import shutdown_process_group

    shutdown_process_group()  # a clean exit for every torchrun process
    return result


def run(args: argparse.Namespace, rest: Sequence[str] = ()) -> int:
    from mixkit.data.bad_images import TooManyBadImagesError
    from mixkit.data.download import DatasetNotFoundError
    from mixkit.data.validation import AnnotationError

    if any(word in ("-h", "--help") for word in rest):
        hf_parser().print_help()
        return 0
    try:
        model_args, data_args, train_args = parse(args.stage, args.config, rest)
        train(args.stage, model_args, data_args, train_args)
    except (TrainConfigError, AnnotationError, DatasetNotFoundError, FileNotFoundError, ValueError,
            TooManyBadImagesError) as error:
        print(f"mixkit train {args.stage}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixkit train", description=__doc__.splitlines()[0], add_help=False)
    add_arguments(parser)
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    return run(args, rest)


if __name__ == "__main__":
    sys.exit(main())
