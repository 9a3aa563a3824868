"""`mixkit convert open-clip` and `mixkit convert eva-clip`: a published weights file -> a complete mixkit folder.

The weights go through the strict key maps of `convert_open_clip.py` / `convert_eva_clip.py` (every key mapped,
dropped with a reason, or the conversion fails listing them); the folder gets config.json + model.safetensors
(`save_pretrained`), the CLIP tokenizer named by `--tokenizer` (checked against the text tower: open_clip pools at
the highest token id, so `<|endoftext|>` must be the last id of a vocabulary of the embedding's size; its
`model_max_length` is set to the text tower's context length), a `CLIPImageProcessor` at the tower's image size
(bicubic resize of the shorter side and centre crop, as open_clip's and EVA-CLIP's evaluation transforms) and
conversion_report.json. Options: `convert_options.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mixkit.models.clip.convert_options import ClipConvertConfig, EvaClipConvertConfig, OpenClipConvertConfig
from mixkit.utils.typed_args import dataclass_from_args

REPORT_NAME = "conversion_report.json"


def load_clip_tokenizer(folder: Path, text_config: Any) -> Any:
    """The CLIP tokenizer of `folder`, checked to fit the converted text tower."""
    from transformers import CLIPTokenizer

    if not folder.is_dir():
        raise FileNotFoundError(f"--tokenizer {folder}: no such folder")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    text = text_config if isinstance(text_config, dict) else text_config.to_dict()  # EvaClipConfig keeps a dict
    vocab_size = text["vocab_size"]
    if len(tokenizer) != vocab_size or tokenizer.eos_token_id != vocab_size - 1:
        raise ValueError(f"--tokenizer {folder}: {len(tokenizer)} tokens with <|endoftext|> at id "
                         f"{tokenizer.eos_token_id}, but the weights' text tower has {vocab_size} token embeddings "
                         f"and pools at id {vocab_size - 1}: not the tokenizer these weights were trained with")
    tokenizer.model_max_length = text["max_position_embeddings"]
    return tokenizer


def image_processor(image_size: int, config: ClipConvertConfig) -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size},
                              crop_size={"height": image_size, "width": image_size},
                              image_mean=list(config.mean), image_std=list(config.std))


def write_folder(model: Any, report: Any, config: ClipConvertConfig) -> None:
    tokenizer = load_clip_tokenizer(config.tokenizer, model.config.text_config)
    config.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.output)
    tokenizer.save_pretrained(config.output)
    image_processor(model.config.vision_config.image_size, config).save_pretrained(config.output)
    summary = report.summary() | {"weights": str(config.weights), "tokenizer": str(config.tokenizer)}
    (config.output / REPORT_NAME).write_text(json.dumps(summary, indent=2) + "\n")


def _open_clip_model(sd: Mapping[str, Any], config: OpenClipConvertConfig) -> tuple[Any, Any]:
    from mixkit.models.clip.convert_open_clip import OpenClipSpec, load_open_clip_weights

    return load_open_clip_weights(sd, OpenClipSpec(quick_gelu=config.quick_gelu, head_width=config.head_width))


def _eva_clip_model(sd: Mapping[str, Any], config: EvaClipConvertConfig) -> tuple[Any, Any]:
    from mixkit.models.clip.convert_eva_clip import EvaClipSpec, load_eva_clip_weights

    spec = EvaClipSpec(head_width=config.head_width, rope_pretrain_grid=config.rope_pretrain_grid)
    return load_eva_clip_weights(sd, spec)


def convert(config: ClipConvertConfig, build: Callable[[Mapping[str, Any], Any], tuple[Any, Any]]) -> Path:
    """Read, convert strictly, write the folder; raises `ConversionError` (key problems) or a usage error."""
    from mixkit.models.clip.keymap import read_source_weights

    model, report = build(read_source_weights(config.weights), config)
    write_folder(model, report, config)
    return config.output


def _run(config_type: type[ClipConvertConfig], build: Callable, args: argparse.Namespace) -> int:
    from mixkit.models.clip.keymap import ConversionError

    try:
        config = dataclass_from_args(config_type, args)
        output = convert(config, build)
    except ConversionError as error:  # the weights do not fit: every problem key listed
        print(f"mixkit convert: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:  # a missing file or a bad option
        print(f"mixkit convert: {error}", file=sys.stderr)
        return 2
    print(output)
    return 0


def run_open_clip(args: argparse.Namespace) -> int:
    """`mixkit convert open-clip`: the folder's path on stdout; exit 1 on key problems, 2 on bad input."""
    return _run(OpenClipConvertConfig, _open_clip_model, args)


def run_eva_clip(args: argparse.Namespace) -> int:
    """`mixkit convert eva-clip`: the folder's path on stdout; exit 1 on key problems, 2 on bad input."""
    return _run(EvaClipConvertConfig, _eva_clip_model, args)
