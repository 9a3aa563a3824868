"""Test support, as `transformers.testing_utils`: complete tiny checkpoints (random weights, tokenizers trained
here) for the tests, the benchmarks and users' own tests. Nothing in the library imports this module."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mixkit.data.tokenizers import (newline_token_id, train_bert_tokenizer, train_clip_tokenizer, train_opt_tokenizer,
                                    train_t5_tokenizer)
from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.reference import reference_settings
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.pipelines.blip2 import Blip2Pipeline

DEFAULT_TEXTS = tuple(
    f"a {size} {color} {shape} on the {side}"
    for size in ("small", "large")
    for color in ("red", "green", "blue", "yellow")
    for shape in ("circle", "square", "triangle")
    for side in ("left", "right", "top")
)


def build_tiny_predictor(
    directory: str | Path,
    language_model: str = "opt",
    texts: Sequence[str] = DEFAULT_TEXTS,
    seed: int = 0,
    image_size: int = 32,
    weight_std: float = 0.15,
) -> Blip2Pipeline:
    """Train a tokenizer on `texts`, build a tiny BLIP-2 around it with random weights, save the whole folder.

    OPT-style models stop on the "\\n" token, as the Hub's BLIP-2 OPT configs do.
    """
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:  # the predictor saves the tokenizer into `directory`
        if language_model == "opt":
            tokenizer = train_opt_tokenizer(texts, scratch, vocab_size=300)
        else:
            tokenizer = train_t5_tokenizer(texts, scratch, vocab_size=200)
    config = tiny_blip2_config(language_model, vocab_size=len(tokenizer), image_size=image_size)
    if language_model == "opt":
        config.text_config.eos_token_id = newline_token_id(tokenizer)
    torch.manual_seed(seed)
    model = Blip2Model(config)
    randomize_(model, seed, weight_std)
    settings = reference_settings(model.is_encoder_decoder)
    predictor = Blip2Pipeline(model, tokenizer, ImageProcessorConfig(image_size=image_size), settings)
    predictor.save_pretrained(directory)
    return predictor


def build_tiny_stage1(directory: str | Path, texts: Sequence[str] = DEFAULT_TEXTS, seed: int = 0,
                      image_size: int = 32) -> Blip2Stage1Model:
    """A stage-1 folder: tiny Q-Former model, its BERT tokenizer ([DEC] bos) and image preprocessing."""
    directory = Path(directory)
    tokenizer = train_bert_tokenizer(texts, directory, vocab_size=300)
    config = tiny_blip2_config(qformer_vocab_size=len(tokenizer), image_size=image_size, stage1=True)
    torch.manual_seed(seed)
    model = Blip2Stage1Model(config)
    model.save_pretrained(directory)
    ImageProcessorConfig(image_size=image_size).save(directory)
    return model


def build_tiny_clip(directory: str | Path, texts: Sequence[str] = DEFAULT_TEXTS, seed: int = 0,
                    image_size: int = 32) -> Any:
    """A `transformers`-saved CLIP folder: a tiny random `CLIPModel` (8 px patches), a CLIP tokenizer trained on
    `texts` and a `CLIPImageProcessor` at `image_size`; returns the model."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = Path(directory)
    tokenizer = train_clip_tokenizer(texts, directory)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, **special)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    size = {"shortest_edge": image_size}
    CLIPImageProcessor(size=size, crop_size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return model


def randomize_(model: torch.nn.Module, seed: int, std: float) -> torch.nn.Module:
    """Every parameter random (norm scales around 1), so tiny models give varied, non-degenerate outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * std
            is_norm_scale = "norm" in name.lower() and name.endswith("weight")
            parameter.copy_(1.0 + noise if is_norm_scale else noise)
    return model.eval()


def save_transformers_blip2(directory: str | Path, seed: int = 4) -> tuple[Any, Any]:
    """A tiny BLIP-2 OPT folder written by `transformers` itself (`Blip2ForConditionalGeneration` and
    `Blip2Processor.save_pretrained`), as the Hub's folders are; returns (model, processor)."""
    from tokenizers import AddedToken
    from transformers import Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = train_opt_tokenizer(DEFAULT_TEXTS, scratch, vocab_size=300)
    config = tiny_blip2_config("opt", vocab_size=len(tokenizer))
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config.text_config.eos_token_id = newline_token_id(tokenizer)
    model = randomize_(Blip2ForConditionalGeneration(config), seed=seed, std=0.15)
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, num_query_tokens=config.num_query_tokens)
    # transformers 5.24's processor expects an AddedToken where tokenizers saved with
    # extra_special_tokens give a str; the token itself is the same "<image>".
    processor.image_token = AddedToken("<image>", normalized=False, special=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


def update_config(directory: str | Path, section: str, **values: Any) -> None:
    """Change fields of one sub-config (`text_config`, `qformer_config`, ...) of a saved `config.json`."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    config[section].update(values)
    path.write_text(json.dumps(config))


def build_tiny_training_setup(shapes_dir: str | Path, model_dir: str | Path, num_train: int = 4) -> None:
    """A small shapes set (32 px) and a tiny OPT BLIP-2 whose tokenizer is trained on its captions: what the
    training tests start from."""
    from mixkit.data.shapes import ShapesConfig, write_shapes_dataset

    write_shapes_dataset(Path(shapes_dir), ShapesConfig(num_train=num_train, num_val=1, num_test=1, image_size=32))
    records = json.loads((Path(shapes_dir) / "annotations/caption_train.json").read_text())
    build_tiny_predictor(model_dir, "opt", [record["caption"] for record in records], weight_std=0.05)
