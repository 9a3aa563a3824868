"""Test support, as `transformers.testing_utils`: complete tiny checkpoints (random weights, tokenizers trained
here) for the tests, the benchmarks and users' own tests. Nothing in the library imports this module."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
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


def build_tiny_eva_clip(directory: str | Path, texts: Sequence[str] = DEFAULT_TEXTS, seed: int = 0,
                        image_size: int = 32) -> Any:
    """An EVA-CLIP folder: a tiny random `EvaClipModel` (EVA-02 vision tower, 8 px patches, rotary tables for
    the 4x4 grid), a CLIP tokenizer trained on `texts` and a `CLIPImageProcessor`; returns the model."""
    from transformers import CLIPImageProcessor

    from mixkit.models.clip.eva_clip import EvaClipModel
    from mixkit.models.clip.eva_config import EvaClipConfig, EvaVisionConfig

    directory = Path(directory)
    tokenizer = train_clip_tokenizer(texts, directory)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = EvaVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                             image_size=image_size, patch_size=8)
    torch.manual_seed(seed)
    model = EvaClipModel(EvaClipConfig(vision_config=vision, text_config=text, projection_dim=16)).eval()
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


def teach_language(language_model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], steps: int,
                   trains: Callable[[str], bool] = lambda name: True) -> None:
    """Train a tiny random LLM on `texts` alone (right-padded, pads unlabelled; AdamW at 1e-2, seed 0; only the
    parameters whose names `trains` accepts): a frozen LLM that knows the test data's language, as a real one knows
    English, so that a run that trains the image side measures what the image adds. Left in eval mode."""
    torch.manual_seed(0)
    tokens = tokenizer(list(texts), padding=True, padding_side="right", return_tensors="pt")
    labels = tokens.input_ids.masked_fill(tokens.attention_mask == 0, -100)
    taught = [p for name, p in language_model.named_parameters() if trains(name)]
    frozen = [p for p in taught if not p.requires_grad]  # e.g. a Llama that peft has already frozen for LoRA
    for parameter in frozen:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(taught, lr=1e-2)
    language_model.train()
    for _ in range(steps):
        loss = language_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for parameter in frozen:
        parameter.requires_grad_(False)
    language_model.eval()


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


def train_blip_tokenizer(texts: Sequence[str], directory: str | Path) -> Any:
    """A WordPiece BERT tokenizer trained on `texts` with BLIP's two extra tokens, as LAVIS's `init_tokenizer` adds
    them to bert-base-uncased: `[DEC]` as bos, then `[ENC]` as an additional special token; saved in `directory`."""
    tokenizer = train_bert_tokenizer(texts, directory, vocab_size=300)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def tiny_blip_config_for(tokenizer: Any, image_size: int = 32) -> Any:
    """A tiny `BlipConfig` whose vocabulary and special ids are `tokenizer`'s."""
    from mixkit.models.blip.tiny import tiny_blip_config

    return tiny_blip_config(len(tokenizer), image_size, bos_token_id=tokenizer.bos_token_id,
                            sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)


TRANSFORMERS_BLIP_CLASSES = ("BlipForConditionalGeneration", "BlipForQuestionAnswering", "BlipForImageTextRetrieval")


def save_transformers_blip(directory: str | Path, architecture: str, texts: Sequence[str] = DEFAULT_TEXTS,
                           seed: int = 0, image_size: int = 32) -> Any:
    """A tiny BLIP folder written by `transformers` itself (`architecture` one of its three BLIP heads, random
    weights), with a BLIP tokenizer trained on `texts` and a `BlipImageProcessor` config; returns the model."""
    import transformers

    if architecture not in TRANSFORMERS_BLIP_CLASSES:
        raise ValueError(f"architecture must be one of {TRANSFORMERS_BLIP_CLASSES}, got {architecture!r}")
    directory = Path(directory)
    tokenizer = train_blip_tokenizer(texts, directory)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(tiny_blip_config_for(tokenizer, image_size))
    randomize_(model, seed, std=0.15)
    model.save_pretrained(directory)
    ImageProcessorConfig(image_size=image_size).save(directory)  # BlipImageProcessor's layout
    return model


def build_tiny_blip(directory: str | Path, architecture: str = "BlipForPreTraining",
                    texts: Sequence[str] = DEFAULT_TEXTS, seed: int = 0, image_size: int = 32,
                    weight_std: float = 0.15) -> Any:
    """A complete mixkit BLIP folder (any architecture of `mixkit.models.blip.modeling`, random weights, BLIP
    tokenizer trained on `texts`, preprocessing, LAVIS's settings); returns the `BlipPipeline`."""
    from mixkit.models.blip.modeling import BlipModel
    from mixkit.models.blip.reference import lavis_settings
    from mixkit.pipelines.blip import BlipPipeline

    directory = Path(directory)
    tokenizer = train_blip_tokenizer(texts, directory)
    torch.manual_seed(seed)
    model = BlipModel(tiny_blip_config_for(tokenizer, image_size), architecture)
    return _save_random_blip_family(BlipPipeline, model, tokenizer, lavis_settings(), directory, image_size, seed,
                                    weight_std)


def _save_random_blip_family(pipeline_class: Any, model: Any, tokenizer: Any, settings: Any, directory: Path,
                             image_size: int, seed: int, weight_std: float) -> Any:
    """BLIP / ALBEF: random weights, `temp` (where the architecture has one) at LAVIS's initial 0.07, the
    pipeline over them saved as a complete folder; returns the pipeline."""
    model = randomize_(model, seed, weight_std)
    with torch.no_grad():
        if hasattr(model, "temp"):
            model.temp.fill_(0.07)
    pipeline = pipeline_class(model, tokenizer, ImageProcessorConfig(image_size=image_size), settings,
                              directory=directory)
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_albef(directory: str | Path, architecture: str = "AlbefForPreTraining",
                     texts: Sequence[str] = DEFAULT_TEXTS, seed: int = 0, image_size: int = 32,
                     weight_std: float = 0.15) -> Any:
    """A complete mixkit ALBEF folder (any architecture of `mixkit.models.albef.modeling`, random weights, a BERT
    tokenizer trained on `texts`, preprocessing); returns the `AlbefPipeline`."""
    from mixkit.models.albef.modeling import AlbefModel
    from mixkit.models.albef.tiny import tiny_albef_config
    from mixkit.models.blip.reference import folder_settings
    from mixkit.pipelines.albef import AlbefPipeline

    directory = Path(directory)
    tokenizer = train_bert_tokenizer(texts, directory, vocab_size=300)
    config = tiny_albef_config(len(tokenizer), image_size, cls_token_id=tokenizer.cls_token_id,
                               sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return _save_random_blip_family(AlbefPipeline, AlbefModel(config, architecture), tokenizer, folder_settings(),
                                    directory, image_size, seed, weight_std)


def build_tiny_minigpt4(directory: str | Path, variant: str = "vicuna0", texts: Sequence[str] = DEFAULT_TEXTS,
                        seed: int = 0, image_size: int = 32, weight_std: float = 0.15) -> Any:
    """A complete MiniGPT-4 / MiniGPT-v2 folder (`variant` vicuna0, llama2 or minigptv2): random weights (LoRA
    included), a LLaMA-layout tokenizer trained on `texts` plus the templates' words, preprocessing and the
    reference settings; returns the `MiniGPT4Pipeline`."""
    from mixkit.data.tokenizers import train_llama_tokenizer
    from mixkit.models.minigpt4.modeling import MiniGPT4Model
    from mixkit.models.minigpt4.templates import TEMPLATES, reference_settings as minigpt4_settings
    from mixkit.models.minigpt4.tiny import tiny_minigpt4_config
    from mixkit.pipelines.minigpt4 import MiniGPT4Pipeline

    directory = Path(directory)
    template_words = [t.system + t.user_role + t.assistant_role + t.sep + " " + t.training_template
                      for t in TEMPLATES.values()] * 3
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = train_llama_tokenizer([*texts, *template_words], scratch, vocab_size=500)
    config = tiny_minigpt4_config(variant, len(tokenizer), image_size, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = randomize_(MiniGPT4Model(config), seed, weight_std)
    pipeline = MiniGPT4Pipeline(model, tokenizer, ImageProcessorConfig(image_size=image_size),
                                minigpt4_settings(variant))
    pipeline.save_pretrained(directory)
    return pipeline


def save_transformers_instructblip(directory: str | Path, language_model: str = "opt",
                                   texts: Sequence[str] = DEFAULT_TEXTS, seed: int = 3,
                                   weight_std: float = 0.15) -> tuple[Any, Any]:
    """A tiny InstructBLIP folder written by `transformers` itself (`InstructBlipForConditionalGeneration` with an
    OPT or Flan-T5 LLM, random weights, and `InstructBlipProcessor.save_pretrained`: LLM tokenizer, BERT
    `qformer_tokenizer/`, image processor), as the Hub's folders are; returns (model, processor)."""
    from tokenizers import AddedToken
    from transformers import BlipImageProcessor, InstructBlipForConditionalGeneration, InstructBlipProcessor

    from mixkit.models.instructblip.tiny import tiny_instructblip_config

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        train = train_opt_tokenizer if language_model == "opt" else train_t5_tokenizer
        tokenizer = train(texts, Path(scratch) / "llm", vocab_size=300 if language_model == "opt" else 200)
        qformer_tokenizer = train_bert_tokenizer(texts, Path(scratch) / "qformer", vocab_size=300)
    config = tiny_instructblip_config(language_model, vocab_size=len(tokenizer),
                                      qformer_vocab_size=len(qformer_tokenizer),
                                      image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    config.qformer_config.pad_token_id = qformer_tokenizer.pad_token_id
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tokenizer, name) is not None:
            setattr(config.text_config, name, getattr(tokenizer, name))
    model = randomize_(InstructBlipForConditionalGeneration(config), seed=seed, std=weight_std)
    processor = InstructBlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                                      tokenizer=tokenizer, qformer_tokenizer=qformer_tokenizer,
                                      num_query_tokens=config.num_query_tokens)
    # transformers 5.24's processor expects an AddedToken where tokenizers saved with extra_special_tokens give a
    # str (REFERENCE.md); the token itself is the same "<image>".
    processor.image_token = AddedToken("<image>", normalized=False, special=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor
