"""The options of `mixkit convert lavis`, apart from the converter so that building the parser imports no torch.

The conversion runs in `lavis_files.run_convert`; the checkpoint kinds are defined here because both the
options (`--kind`) and the converter's key maps need them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal, get_args

Kind = Literal["stage1", "opt", "t5"]
KINDS: tuple[Kind, ...] = get_args(Kind)


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--lavis", type=Path, required=True, help="LAVIS .pth checkpoint")
    parser.add_argument("--kind", choices=KINDS, required=True, help="stage1 (Blip2Qformer), opt or t5")
    parser.add_argument("--vit", type=Path, help="EVA ViT-g .pth (eva_vit_g.pth) for checkpoints without the ViT")
    parser.add_argument("--output", type=Path, required=True, help="folder for model.safetensors")
    parser.add_argument(
        "--config", type=Path, help="Blip2 config.json (or its folder) to check the converted keys against"
    )
    parser.add_argument(
        "--allow-unmapped", action="store_true", help="write the output even if some LAVIS keys matched no rule"
    )
    parser.add_argument(
        "--base", help="a complete checkpoint (catalogue name or folder, e.g. the Hub's blip2-opt-2.7b) that "
        "supplies config, tokenizer, preprocessing and the weights LAVIS does not store (the frozen LLM, the ViT): "
        "the output then loads on its own with from_pretrained"
    )
    return parser
