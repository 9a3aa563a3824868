"""Caption and answer images with a BLIP-2 checkpoint: images + text in, strings out.

Public interface (what eval, the demo, `mixkit predict` and the server call):
- `encode_images(images)`: image-encoder outputs, computed once and reusable for every prompt of an image;
- `generate(image_embeds, prompts, settings)`: one text per (image embedding, prompt) row;
- `caption(images)`, `answer(images, questions)`, `answer_grouped(images, questions_per_image)`: the tasks with
  the checkpoint's reference prompts and settings (`mixkit.pipelines.settings`).

Padding is chosen per language-model family and passed per call (never by mutating the tokenizer):
decoder-only prompts are left-padded, encoder-decoder prompts right-padded (T5's relative positions must not
see the pads in between).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.reference import reference_settings
from mixkit.models.catalogue import get_checkpoint
from mixkit.models.entry import CheckpointEntry
from mixkit.models.hub import identify_checkpoint, resolve_checkpoint
from mixkit.models.settings import GenerationSettings, PredictionSettings
from mixkit.pipelines.common import ImageTextPipeline, place_model
from mixkit.pipelines.settings import resolve_prediction_settings

logger = logging.getLogger(__name__)


def check_special_tokens(model: Blip2Model, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Stop, pad and start ids must exist in the LLM's vocabulary and the tokenizer must fit it (a mismatch
    otherwise shows up as garbage text or an index error deep inside generate)."""
    text_config = model.config.text_config
    vocab = text_config.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(f"{directory}: the tokenizer has {len(tokenizer)} tokens but the language model only "
                         f"{vocab} embeddings: tokenizer and weights do not belong together")
    for name in ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id"):
        value = getattr(text_config, name, None)
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and not 0 <= token_id < vocab:
                raise ValueError(f"{directory}/config.json: text_config.{name}={token_id} is outside the "
                                 f"vocabulary (size {vocab})")
    if not model.is_encoder_decoder and isinstance(text_config.eos_token_id, int):
        stop = tokenizer.convert_ids_to_tokens(text_config.eos_token_id)
        if stop not in ("\n", "\u010a"):  # BLIP-2 OPT stops on the newline token (byte-level BPE writes it as "Ċ")
            logger.warning("%s: text_config.eos_token_id is %r, not the newline token BLIP-2 OPT models stop on; "
                           "generations may run on to the length limit", directory, stop)


def catalogue_entry_for(name_or_dir: str, directory: Path) -> CheckpointEntry | None:
    """The catalogue entry behind a name, or behind a folder recognised by its location."""
    if Path(name_or_dir).expanduser().is_dir():
        return identify_checkpoint(directory)
    return get_checkpoint(name_or_dir)


class Blip2Pipeline(ImageTextPipeline):
    """A BLIP-2 checkpoint with its tokenizer, image preprocessing and reference settings (`caption`, `answer`,
    `answer_grouped`, `save_pretrained`: `ImageTextPipeline`'s)."""

    family = "blip2"
    tasks = ("caption", "vqa")

    def __init__(self, model: Blip2Model, tokenizer: PreTrainedTokenizerBase, image_config: ImageProcessorConfig,
                 settings: PredictionSettings, device: torch.device | str = "cpu"):
        super().__init__(model, tokenizer, image_config, settings, device)
        self.padding_side = "right" if model.is_encoder_decoder else "left"

    @classmethod
    def from_pretrained(cls, name_or_dir: str, device: str | None = None, fp32: bool = False) -> Blip2Pipeline:
        """A catalogue name or a checkpoint folder (mixkit- or `transformers`-saved). On a GPU the frozen ViT
        trunk and LLM run in bf16/fp16 as the reference does, unless `fp32`."""
        directory = resolve_checkpoint(name_or_dir)
        entry = catalogue_entry_for(name_or_dir, directory)
        model = Blip2Model.from_pretrained(directory)
        settings = resolve_prediction_settings(directory, entry,
                                               lambda: reference_settings(model.is_encoder_decoder))
        target = place_model(model, device, fp32)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        check_special_tokens(model, tokenizer, directory)
        return cls(model, tokenizer, ImageProcessorConfig.load(directory), settings, target)

    @torch.no_grad()
    def generate(self, image_embeds: torch.Tensor, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:
        """One text per (image embedding, prompt) row, without the prompt, stripped."""
        tokens = self.tokenizer(
            list(prompts), padding=True, padding_side=self.padding_side, return_tensors="pt"
        ).to(self.device)
        ids = self.model.generate(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                  image_embeds=image_embeds, **settings.generate_kwargs())
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


__all__ = ["Blip2Pipeline", "check_special_tokens"]
