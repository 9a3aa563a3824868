"""The `mixkit` command: help for every subcommand and the catalogue listing."""

from __future__ import annotations

import argparse

import pytest

from mixkit.cli import build_parser, main
from mixkit.models.catalogue import checkpoint_names


def test_models_lists_every_catalogue_name(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in checkpoint_names():
        assert name in out
    assert "blip2-pretrained-flant5xxl" in out and "364" in out


def _subparser(parser: argparse.ArgumentParser, path: list[str]) -> argparse.ArgumentParser:
    for word in path:
        choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = choices.choices[word]
    return parser


@pytest.mark.parametrize("command", [["predict", "caption"], ["predict", "vqa"], ["convert", "lavis"],
                                     ["score", "vqa"], ["score", "caption"], ["data", "check"],
                                     ["eval", "vqa"], ["eval", "caption"], ["eval", "retrieval"],
                                     ["data", "shards"], ["demo"]])
def test_every_option_is_explained(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "--" in capsys.readouterr().out
    parser = _subparser(build_parser(), command)
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, f"{command}: {action.option_strings} has no help"


def test_train_help_lists_the_articles_arguments(capsys) -> None:
    assert main(["train", "blip2-stage1", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("per_device_train_batch_size", "model_name_or_path", "warmup_steps", "eta_min", "learning_rate",
                 "weight_decay", "num_train_epochs", "tensor_parallel_degree", "sharding_parallel_degree",
                 "output_dir", "logging_steps", "do_train", "save_strategy", "resume_from_checkpoint",
                 "load_model_path", "gradient_checkpointing", "bf16", "fp16"):
        assert f"--{name}" in out, name
