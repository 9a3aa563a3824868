"""Build a mixkit MiniGPT-4 / MiniGPT-v2 folder from the official files.

The official checkpoints hold only what was trained (Vision-CAIR/MiniGPT-4 d94738a,
`minigpt4/runners/runner_base.py::_save_checkpoint` drops every parameter without `requires_grad`), inside
`{"model": state_dict, "optimizer": ..., "config": ...}`:

- MiniGPT-4 (`pretrained_minigpt4*.pth`, `pretrained_minigpt4_llama2_7b.pth`): `llama_proj.weight`,
  `llama_proj.bias`;
- MiniGPT-v2 (`minigptv2_checkpoint.pth`): `llama_proj.*` and the LoRA weights
  `llama_model.base_model.model.<llama key>.lora_A[.default].weight` (peft 0.2 wrote no adapter name, later
  versions write `.default`).

The rest comes from two folders in the Hugging Face layout: a BLIP-2 folder for the EVA ViT-g (and, for the
Vicuna variant, BLIP-2's `ln_vision`, Q-Former and queries: the official code loads them from LAVIS's
`blip2_pretrained_flant5xxl.pth`, which `Salesforce/blip2-flan-t5-xxl` holds converted) and the Llama / Vicuna
folder. Without a Q-Former the official `ln_vision` is a fresh LayerNorm (weight 1, bias 0) that no file
holds. Every key of the official file must be used; every model key must be filled (a strict load).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from transformers import Blip2Config, LlamaConfig, LlamaTokenizer

from mixkit.data.tokenizers import LLAMA_PAD_TOKEN
from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.blip2.convert_lavis import ConversionError
from mixkit.models.blip2.lavis_files import load_lavis_checkpoint
from mixkit.models.minigpt4.config import LoraSettings, MiniGPT4Config
from mixkit.models.minigpt4.modeling import MiniGPT4Model
from mixkit.models.minigpt4.templates import reference_settings
from mixkit.models.serialization import load_weights_strict, read_weights

VARIANTS = ("vicuna0", "llama2", "minigptv2")
IMAGE_SIZES = {"vicuna0": 224, "llama2": 224, "minigptv2": 448}  # minigpt4_*.yaml, minigpt_v2.yaml image_size
_LORA_KEY = re.compile(r"^llama_model\.base_model\.model\.(.+)\.(lora_[AB])(?:\.default)?\.weight$")


def official_key(key: str) -> str | None:
    """The mixkit name of an official checkpoint key, None for a key with no place in the model."""
    if key in ("llama_proj.weight", "llama_proj.bias"):
        return key
    match = _LORA_KEY.match(key)
    if match:
        return f"language_model.{match.group(1)}.{match.group(2)}.default.weight"
    return None


def convert_official_state_dict(official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The official file's tensors under mixkit names; an unknown key is an error naming it."""
    converted, unknown = {}, []
    for key, value in official.items():
        target = official_key(key)
        if target is None:
            unknown.append(key)
        else:
            converted[target] = value
    if unknown:
        raise ConversionError(f"official checkpoint keys with no place in MiniGPT-4: {sorted(unknown)[:20]}")
    if "llama_proj.weight" not in converted:
        raise ConversionError("the official checkpoint holds no llama_proj.weight: not a MiniGPT-4 checkpoint")
    return converted


def read_llama_weights(directory: Path) -> dict[str, Tensor]:
    """A Llama folder's weights: safetensors, else `pytorch_model*.bin` loaded with `weights_only=True`."""
    try:
        return read_weights(directory)
    except FileNotFoundError:
        bins = sorted(directory.glob("pytorch_model*.bin"))
        if not bins:
            raise FileNotFoundError(f"{directory}: no model.safetensors, sharded index or pytorch_model*.bin") from None
    state: dict[str, Tensor] = {}
    for path in bins:
        state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state


def language_model_state(llama: Mapping[str, Tensor], lora: LoraSettings | None) -> dict[str, Tensor]:
    """Llama keys under `language_model.`; LoRA-adapted projections keep their weight as `base_layer`."""
    state = {}
    for key, value in llama.items():
        module = key.rsplit(".", 2)
        if lora is not None and len(module) == 3 and module[1] in lora.target_modules:
            key = f"{module[0]}.{module[1]}.base_layer.{module[2]}"
        state[f"language_model.{key}"] = value
    return state


def image_side_state(blip2: Mapping[str, Tensor], with_qformer: bool, vision_hidden: int) -> dict[str, Tensor]:
    """ViT (and Q-Former + queries) from a BLIP-2 folder; a fresh `ln_vision` without a Q-Former."""
    prefixes = ("vision_model.", "qformer.", "query_tokens") if with_qformer else ("vision_model.",)
    state = {key: value for key, value in blip2.items() if key.startswith(prefixes)}
    if not with_qformer:
        state["vision_model.post_layernorm.weight"] = torch.ones(vision_hidden)
        state["vision_model.post_layernorm.bias"] = torch.zeros(vision_hidden)
    return state


def lora_rank(converted: Mapping[str, Tensor]) -> int:
    """The LoRA rank the checkpoint was trained with (lora_A is [r, in]); 64 in minigpt_v2.yaml."""
    ranks = {value.shape[0] for key, value in converted.items() if ".lora_A." in key}
    if len(ranks) != 1:
        raise ConversionError(f"a MiniGPT-v2 checkpoint needs LoRA weights of one rank, found ranks {sorted(ranks)}")
    return ranks.pop()


def official_config(variant: str, blip2_dir: Path, llama_dir: Path, rank: int = 64) -> MiniGPT4Config:
    if variant not in VARIANTS:
        raise ValueError(f"--variant {variant!r}: one of {VARIANTS}")
    blip2 = Blip2Config.from_pretrained(blip2_dir)
    with_qformer = variant == "vicuna0"
    return MiniGPT4Config(
        vision_config=blip2.vision_config.to_dict(),
        text_config=LlamaConfig.from_pretrained(llama_dir).to_dict(),
        qformer_config=blip2.qformer_config.to_dict() if with_qformer else None,
        num_query_tokens=blip2.num_query_tokens if with_qformer else 0,
        conversation_template=variant,
        lora=LoraSettings(r=rank) if variant == "minigptv2" else None,  # alpha 16, dropout 0.05 (minigpt_v2.yaml)
    )


def convert_official(variant: str, checkpoint: Path, blip2_dir: Path, llama_dir: Path, output: Path) -> Path:
    """Write a complete MiniGPT-4 folder (weights, config, Llama tokenizer, preprocessing, settings)."""
    official = convert_official_state_dict(load_lavis_checkpoint(checkpoint))
    config = official_config(variant, blip2_dir, llama_dir, lora_rank(official) if variant == "minigptv2" else 64)
    state = image_side_state(read_weights(blip2_dir), config.has_qformer, int(config.vision_config["hidden_size"]))
    state.update(language_model_state(read_llama_weights(llama_dir), config.lora))
    state.update(official)
    model = MiniGPT4Model(config)
    load_weights_strict(model, state)
    model.save_pretrained(output)
    tokenizer = LlamaTokenizer.from_pretrained(llama_dir, legacy=True)
    tokenizer.pad_token = LLAMA_PAD_TOKEN  # base_model.py init_llm
    tokenizer.save_pretrained(output)
    ImageProcessorConfig(image_size=IMAGE_SIZES[variant]).save(output)
    reference_settings(variant).save(output)
    return Path(output)


def run(args) -> int:
    """`mixkit convert minigpt4`: the folder path on stdout; a bad input is one line on stderr, exit code 2."""
    import sys

    try:
        output = convert_official(args.variant, Path(args.checkpoint), Path(args.blip2), Path(args.llama),
                                  Path(args.output))
    except (ConversionError, FileNotFoundError, ValueError) as error:
        print(f"mixkit convert minigpt4: error: {error}", file=sys.stderr)
        return 2
    print(output)
    return 0
