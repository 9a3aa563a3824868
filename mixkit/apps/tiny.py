"""Complete tiny BLIP-2 checkpoints (random weights, tokenizers trained here) for tests and benchmarks."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from mixkit.apps.predictor import Blip2Predictor, PredictionSettings
from mixkit.data.tokenizers import newline_token_id, train_bert_tokenizer, train_opt_tokenizer, train_t5_tokenizer
from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.blip2.tiny import tiny_blip2_config

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
) -> Blip2Predictor:
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
    settings = PredictionSettings.family_defaults(model.is_encoder_decoder)
    predictor = Blip2Predictor(model, tokenizer, ImageProcessorConfig(image_size=image_size), settings)
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


def randomize_(model: torch.nn.Module, seed: int, std: float) -> torch.nn.Module:
    """Every parameter random (norm scales around 1), so tiny models give varied, non-degenerate outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * std
            is_norm_scale = "norm" in name.lower() and name.endswith("weight")
            parameter.copy_(1.0 + noise if is_norm_scale else noise)
    return model.eval()
