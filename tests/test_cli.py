"""The `mixkit` command: help for every subcommand and the catalogue listing."""

from __future__ import annotations

import pytest

from mixkit.cli import main
from mixkit.models.catalogue import checkpoint_names


def test_models_lists_every_catalogue_name(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in checkpoint_names():
        assert name in out
    assert "blip2-pretrained-flant5xxl" in out and "364" in out


@pytest.mark.parametrize("command", [["predict", "caption"], ["predict", "vqa"], ["convert", "lavis"],
                                     ["score", "vqa"], ["score", "caption"], ["data", "check"],
                                     ["eval", "vqa"], ["eval", "caption"],
                                     ["data", "shards"]])
def test_every_option_is_explained(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    options = [word for word in help_text.split() if word.startswith("--")]
    assert options, help_text
    # each option line carries an explanation (argparse prints bare options when help= is missing)
    for line in help_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") and "  " not in stripped and not stripped.endswith(("]", "}")):
            nxt = help_text.splitlines()[help_text.splitlines().index(line) + 1].strip()
            assert nxt and not nxt.startswith("-"), f"{stripped!r} has no help text"
