"""The `mixkit train` parser's own options (the stage and the recipe file), light for `mixkit --help`.

The Trainer's options (`HfArgumentParser` over `mixkit.train.arguments`) are parsed by `train_cli` when the
command runs; importing them here would import `transformers`.
"""

from __future__ import annotations

import argparse

STAGES = ("blip2-stage1", "blip2-stage2", "blip2-caption", "clip", "minigpt4-stage1", "minigpt4-stage2", "minigptv2",
          "instructblip", "blip-pretrain", "blip-caption", "blip-vqa",
          "albef-retrieval", "albef-pretrain")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES, help="what to train (BLIP-2 stages; clip: CLIP; MiniGPT-4 stages 1 and 2, MiniGPT-v2; "
                        "blip-*: BLIP pretraining, caption and VQA fine-tuning)")
    parser.add_argument("--config", help="recipe file (YAML/JSON, see configs/); command-line options override it")
