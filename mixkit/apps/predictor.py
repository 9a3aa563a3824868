"""Caption and answer images with a BLIP-2 checkpoint: images + text in, strings out.

Thin by design: decode and validate inputs, run `Blip2Model.generate`, decode tokens. Padding is chosen per
language-model family and passed per call (never by mutating the tokenizer): decoder-only prompts are
left-padded, encoder-decoder prompts right-padded (T5's relative positions must not see the pads in between).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mixkit.data.text import clean_question
from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.catalogue import (
    OPT_CAPTION,
    OPT_VQA,
    T5_CAPTION,
    T5_VQA,
    VQA_PROMPT,
    CheckpointEntry,
    GenerationSettings,
    get_checkpoint,
)
from mixkit.models.hub import resolve_checkpoint

logger = logging.getLogger(__name__)
SETTINGS_NAME = "mixkit_settings.json"


@dataclass(frozen=True)
class PredictionSettings:
    """What a checkpoint needs besides weights to caption and answer like the reference."""

    prompt: str
    vqa_prompt: str
    caption: GenerationSettings
    vqa: GenerationSettings

    @classmethod
    def family_defaults(cls, encoder_decoder: bool) -> PredictionSettings:
        """A folder that names no settings: no caption prompt, the family's reference generation settings."""
        if encoder_decoder:
            return cls("", VQA_PROMPT, T5_CAPTION, T5_VQA)
        return cls("", VQA_PROMPT, OPT_CAPTION, OPT_VQA)

    @classmethod
    def from_entry(cls, entry: CheckpointEntry) -> PredictionSettings:
        if entry.caption is None or entry.vqa is None or entry.vqa_prompt is None:
            raise ValueError(f"{entry.name} is a stage-1 checkpoint: it has no language model to generate text")
        return cls(entry.prompt, entry.vqa_prompt, entry.caption, entry.vqa)

    def save(self, directory: Path) -> None:
        (Path(directory) / SETTINGS_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, encoder_decoder: bool) -> PredictionSettings:
        path = Path(directory) / SETTINGS_NAME
        if not path.is_file():
            return cls.family_defaults(encoder_decoder)
        data = json.loads(path.read_text())
        return cls(data["prompt"], data["vqa_prompt"], GenerationSettings(**data["caption"]),
                   GenerationSettings(**data["vqa"]))


def settings_with_overrides(base: GenerationSettings, num_beams: int | None = None,
                            max_new_tokens: int | None = None, min_new_tokens: int | None = None,
                            length_penalty: float | None = None) -> GenerationSettings:
    """The reference settings with the user's choices on top (None = keep). A max below the reference
    minimum lowers the minimum with it instead of failing. Raises ValueError for impossible settings."""
    changes = {name: value for name, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens),
               ("min_new_tokens", min_new_tokens), ("length_penalty", length_penalty)) if value is not None}
    if min_new_tokens is None and max_new_tokens is not None:
        changes["min_new_tokens"] = min(base.min_new_tokens, max_new_tokens)
    return replace(base, **changes)


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def half_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; None on CPU (fp32 there: half precision is slow and lossy)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_special_tokens(model: Blip2Model, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Stop, pad and start ids must exist in the LLM's vocabulary and the tokenizer must fit it (a mismatch
    otherwise shows up as garbage text or an index error deep inside generate)."""
    text_config = model.config.text_config
    vocab = text_config.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(f"{directory}: the tokenizer has {len(tokenizer)} tokens but the language model only "
                         f"{vocab} embeddings: tokenizer and weights do not belong together")
    names = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")
    for name in names:
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


class Blip2Predictor:
    def __init__(
        self,
        model: Blip2Model,
        tokenizer: PreTrainedTokenizerBase,
        image_config: ImageProcessorConfig,
        settings: PredictionSettings,
        device: torch.device | str = "cpu",
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = EvalImageTransform(image_config)
        self.settings = settings
        self.device = torch.device(device)
        self.padding_side = "right" if model.is_encoder_decoder else "left"

    @classmethod
    def from_pretrained(cls, name_or_dir: str, device: str | None = None, fp32: bool = False) -> Blip2Predictor:
        """A catalogue name or a checkpoint folder (mixkit- or `transformers`-saved). On a GPU the frozen ViT
        trunk and LLM run in bf16/fp16 as the reference does, unless `fp32`."""
        directory = resolve_checkpoint(name_or_dir)
        model = Blip2Model.from_pretrained(directory)
        target = pick_device(device)
        half = None if fp32 else half_dtype(target)
        if half is not None:
            model.set_inference_dtypes(half, half)
        model.to(target)
        if Path(name_or_dir).is_dir():
            settings = PredictionSettings.load(directory, model.is_encoder_decoder)
        else:
            settings = PredictionSettings.from_entry(get_checkpoint(name_or_dir))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        check_special_tokens(model, tokenizer, directory)
        return cls(model, tokenizer, ImageProcessorConfig.load(directory), settings, target)

    def caption(
        self,
        images: Sequence[Image.Image],
        prompt: str | None = None,
        settings: GenerationSettings | None = None,
        batch_size: int = 8,
    ) -> list[str]:
        """One caption per image, without the prompt. Default prompt: the checkpoint's own."""
        prompt = self.settings.prompt if prompt is None else prompt
        return self._generate(images, [prompt] * len(images), settings or self.settings.caption, batch_size)

    def answer(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        settings: GenerationSettings | None = None,
        batch_size: int = 8,
        prompt_template: str | None = None,
    ) -> list[str]:
        """One short answer per (image, question), with the reference prompt and question cleaning."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        template = self.settings.vqa_prompt if prompt_template is None else prompt_template
        prompts = [template.format(clean_question(question)) for question in questions]
        return self._generate(images, prompts, settings or self.settings.vqa, batch_size)

    def generation_kwargs(self, settings: GenerationSettings) -> dict[str, float | int]:
        kwargs = asdict(settings)
        if kwargs["min_new_tokens"] == 0:
            del kwargs["min_new_tokens"]
        return kwargs

    @torch.no_grad()
    def _generate(
        self, images: Sequence[Image.Image], prompts: Sequence[str], settings: GenerationSettings, batch_size: int
    ) -> list[str]:
        texts: list[str] = []
        for image_batch, prompt_batch in zip(batches(images, batch_size), batches(prompts, batch_size)):
            pixels = torch.stack([self.transform(image) for image in image_batch]).to(self.device)
            tokens = self.tokenizer(
                list(prompt_batch), padding=True, padding_side=self.padding_side, return_tensors="pt"
            ).to(self.device)
            ids = self.model.generate(
                pixels, tokens.input_ids, tokens.attention_mask, **self.generation_kwargs(settings)
            )
            texts.extend(text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return texts

    def save_pretrained(self, directory: str | Path) -> Path:
        """A complete, self-describing folder: weights, config, tokenizer, preprocessing, settings."""
        directory = self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.transform.config.save(directory)
        self.settings.save(directory)
        return directory


__all__ = ["Blip2Predictor", "PredictionSettings", "batches", "half_dtype", "pick_device", "settings_with_overrides"]
