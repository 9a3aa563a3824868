"""The options of `mixkit convert open-clip` and `mixkit convert eva-clip`, as typed configs, apart from the
converter (`convert_command.py`) so that building the parser imports neither torch nor transformers.

Both read a published weights file (safetensors, or a torch file with `weights_only=True`) and write a complete
mixkit folder: config.json, model.safetensors, the tokenizer, preprocessor_config.json and conversion_report.json.
Neither file carries a tokenizer: open_clip and EVA-CLIP both tokenise with OpenAI's CLIP BPE (open_clip
`tokenizer.py` `SimpleTokenizer`; EVA-CLIP `eva_clip/tokenizer.py`), which `--tokenizer` names as a folder, e.g.
`hf download openai/clip-vit-base-patch32 vocab.json merges.txt tokenizer.json tokenizer_config.json
special_tokens_map.json --local-dir clip-tokenizer`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from mixkit.data.image_stats import CLIP_MEAN, CLIP_STD
from mixkit.utils.typed_args import add_dataclass_arguments

_TOKENIZER_HELP = ("folder holding OpenAI's CLIP BPE tokenizer (vocab.json + merges.txt or tokenizer.json), the "
                   "one open_clip and EVA-CLIP use; e.g. the tokenizer files of openai/clip-vit-base-patch32")


@dataclass
class ClipConvertConfig:
    """What both converters need."""

    weights: Path = field(metadata={"help": "the published weights file: .safetensors, or a .bin / .pt / .pth read "
                                            "with torch.load(weights_only=True)"})
    tokenizer: Path = field(metadata={"help": _TOKENIZER_HELP})
    output: Path = field(metadata={"help": "folder to write the mixkit checkpoint into"})
    mean: tuple[float, ...] = field(default=CLIP_MEAN, metadata={
        "help": "image normalisation mean (default OpenAI's; open_clip's ViT-L-14 laion2b_s32b_b82k uses 0.5 0.5 0.5)"})
    std: tuple[float, ...] = field(default=CLIP_STD, metadata={"help": "image normalisation std (default OpenAI's)"})
    head_width: int = field(default=64, metadata={"help": "attention head width (heads = width / head_width; 64 in "
                                                          "every published config)"})

    def __post_init__(self) -> None:
        self.weights, self.tokenizer, self.output = Path(self.weights), Path(self.tokenizer), Path(self.output)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("--mean and --std take three numbers each (RGB), the std positive")
        if self.head_width < 1:
            raise ValueError(f"--head-width must be >= 1, got {self.head_width}")


@dataclass
class OpenClipConvertConfig(ClipConvertConfig):
    quick_gelu: bool = field(default=False, metadata={
        "help": "QuickGELU activation: OpenAI-trained weights (open_clip's -quickgelu names, 'openai' tags); LAION's "
                "ViT-B/L/H use plain GELU (the default)"})


@dataclass
class EvaClipConvertConfig(ClipConvertConfig):
    rope_pretrain_grid: int = field(default=16, metadata={
        "help": "the rotary tables' pre-training grid (pt_hw_seq_len, 16 in every EVA02-CLIP config)"})


def add_open_clip_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, OpenClipConvertConfig)


def add_eva_clip_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, EvaClipConvertConfig)
