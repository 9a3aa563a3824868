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

from mixkit.data.text import clean_question
from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.reference import reference_settings
from mixkit.models.catalogue import get_checkpoint
from mixkit.models.entry import CheckpointEntry
from mixkit.models.hub import identify_checkpoint, resolve_checkpoint
from mixkit.models.settings import GenerationSettings, PredictionSettings
from mixkit.pipelines.common import ImageInput, as_images, batches, half_dtype, pick_device
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


class Blip2Pipeline:
    """A BLIP-2 checkpoint with its tokenizer, image preprocessing and reference settings."""

    family = "blip2"
    tasks = ("caption", "vqa")

    def __init__(self, model: Blip2Model, tokenizer: PreTrainedTokenizerBase, image_config: ImageProcessorConfig,
                 settings: PredictionSettings, device: torch.device | str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = EvalImageTransform(image_config)
        self.settings = settings
        self.device = torch.device(device)
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
        target = pick_device(device)
        half = None if fp32 else half_dtype(target)
        if half is not None:
            model.set_inference_dtypes(half, half)
        model.to(target)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        check_special_tokens(model, tokenizer, directory)
        return cls(model, tokenizer, ImageProcessorConfig.load(directory), settings, target)

    # ---------------------------------------------------------------- building blocks

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Pixel tensors on the model's device: [batch, 3, size, size]."""
        return torch.stack([self.transform(image) for image in as_images(images)]).to(self.device)

    @torch.no_grad()
    def encode_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Image-encoder outputs [batch, patches, hidden], computed once and reused for every prompt."""
        return self.model.encode_image(self.preprocess(images))

    def vqa_prompt(self, question: str, template: str | None = None) -> str:
        """The reference VQA prompt for a question (LAVIS's question cleaning, then the template)."""
        return (self.settings.vqa_prompt if template is None else template).format(clean_question(question))

    @torch.no_grad()
    def generate(self, image_embeds: torch.Tensor, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:
        """One text per (image embedding, prompt) row, without the prompt, stripped."""
        tokens = self.tokenizer(
            list(prompts), padding=True, padding_side=self.padding_side, return_tensors="pt"
        ).to(self.device)
        ids = self.model.generate(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                  image_embeds=image_embeds, **settings.generate_kwargs())
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---------------------------------------------------------------- tasks

    def caption(self, images: Sequence[ImageInput], prompt: str | None = None,
                settings: GenerationSettings | None = None, batch_size: int = 8) -> list[str]:
        """One caption per image, without the prompt. Default prompt: the checkpoint's own."""
        prompt = self.settings.prompt if prompt is None else prompt
        settings = settings or self.settings.caption
        texts: list[str] = []
        for chunk in batches(images, batch_size):
            texts += self.generate(self.encode_images(chunk), [prompt] * len(chunk), settings)
        return texts

    def answer(self, images: Sequence[ImageInput], questions: Sequence[str],
               settings: GenerationSettings | None = None, batch_size: int = 8,
               prompt_template: str | None = None) -> list[str]:
        """One short answer per (image, question), with the reference prompt and question cleaning."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        settings = settings or self.settings.vqa
        prompts = [self.vqa_prompt(question, prompt_template) for question in questions]
        texts: list[str] = []
        for image_chunk, prompt_chunk in zip(batches(images, batch_size), batches(prompts, batch_size)):
            texts += self.generate(self.encode_images(image_chunk), prompt_chunk, settings)
        return texts

    def answer_grouped(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                       settings: GenerationSettings | None = None, question_batch: int = 8,
                       prompt_template: str | None = None, image_batch: int | None = None) -> list[list[str]]:
        """Every question about each image, each image encoded once: `questions[i]` are asked about
        `images[i]`; the answers come back in the same nesting. Images are encoded `image_batch` at a time
        (default: all at once); their questions share generation batches of `question_batch` rows."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} question lists")
        step = image_batch or max(1, len(images))
        answers: list[list[str]] = []
        for start in range(0, len(images), step):
            answers += self._answer_image_batch(images[start : start + step], questions[start : start + step],
                                                settings or self.settings.vqa, question_batch, prompt_template)
        return answers

    @torch.no_grad()
    def _answer_image_batch(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                            settings: GenerationSettings, question_batch: int,
                            prompt_template: str | None) -> list[list[str]]:
        embeds = self.encode_images(images)
        rows = [(index, self.vqa_prompt(q, prompt_template)) for index, asked in enumerate(questions) for q in asked]
        flat: list[str] = []
        for chunk in batches(rows, question_batch):
            index = torch.tensor([row for row, _ in chunk], device=embeds.device)
            flat += self.generate(embeds.index_select(0, index), [prompt for _, prompt in chunk], settings)
        answers, start = [], 0
        for asked in questions:
            answers.append(flat[start : start + len(asked)])
            start += len(asked)
        return answers

    def save_pretrained(self, directory: str | Path) -> Path:
        """A complete, self-describing folder: weights, config, tokenizer, preprocessing, settings."""
        directory = self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.transform.config.save(directory)
        self.settings.save(directory)
        return directory


__all__ = ["Blip2Pipeline", "check_special_tokens"]
