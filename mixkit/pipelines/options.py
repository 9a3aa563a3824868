"""Typed options shared by the commands that load a checkpoint and generate (predict, eval, later serve).

Each field becomes a `--kebab-case` option through `mixkit.utils.typed_args`; `None` means "the
checkpoint's own setting" (see `mixkit.pipelines.settings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mixkit.models.settings import GenerationSettings

# Zero-shot classification's single prompt. The CLIP paper (Radford et al. 2021, arXiv 2103.00020, section
# 3.1.4) found "A photo of a {label}." a good default when one template is used (OpenAI's 80-template ImageNet
# ensemble, e.g. open_clip's OPENAI_IMAGENET_TEMPLATES, starts from "a bad photo of a {}." and is not used here).
DEFAULT_TEMPLATE = "a photo of a {}."


def label_prompts(labels: Sequence[str], template: str) -> list[str]:
    """One prompt per label, in order; a template without `{}`, no labels or a blank one is a ValueError."""
    if "{}" not in template:
        raise ValueError(f"--template: {template!r} has no {{}} for the label")
    if not labels or any(not label.strip() for label in labels):
        raise ValueError(f"--labels: give one or more non-empty labels, got {list(labels)}")
    return [template.format(label.strip()) for label in labels]


@dataclass(kw_only=True)
class ModelOptions:
    model: str = field(metadata={"help": "catalogue name (see `mixkit models`) or a checkpoint folder (mixkit- or "
                                         "transformers-saved: config.json + model.safetensors + tokenizer)"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)"})
    fp32: bool = field(default=False, metadata={
        "help": "keep the frozen ViT and LLM in fp32 on GPU (default there: bf16, or fp16)"})


@dataclass(kw_only=True)
class GenerationOptions:
    prompt: str | None = field(default=None, metadata={
        "help": "caption: text the caption continues (default: the checkpoint's own, e.g. 'a photo of' for "
                "caption-finetuned models); vqa: template with {} for the question (default "
                "'Question: {} Short answer:')"})
    num_beams: int | None = field(default=None, metadata={"help": "beam width (default: the reference's, 5)"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "most tokens to generate (default: reference, 29/30 captions, 10 answers)"})
    min_new_tokens: int | None = field(default=None, metadata={
        "help": "fewest tokens to generate (default: reference, 7 captions, 0 answers)"})
    length_penalty: float | None = field(default=None, metadata={
        "help": "beam length penalty (default: reference; VQA 0 for OPT, -1 for Flan-T5)"})
    batch_size: int = field(default=8, metadata={"help": "images per forward pass (default 8)"})

    def check(self) -> None:
        """ValueError naming the option for a count below its minimum."""
        for name in ("num_beams", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
        if self.min_new_tokens is not None and self.min_new_tokens < 0:
            raise ValueError(f"--min-new-tokens: must be >= 0, got {self.min_new_tokens}")

    def apply(self, base: GenerationSettings) -> GenerationSettings:
        """`base` (the checkpoint's reference settings) with these options on top."""
        return base.with_overrides(self.num_beams, self.max_new_tokens, self.min_new_tokens, self.length_penalty)


@dataclass(kw_only=True)
class ChatGenerationOptions(GenerationOptions):
    """Chat's generation options: those above (with chat's defaults) plus a repetition penalty. `None` means the
    checkpoint's own chat setting (the catalogue entry's official defaults, else the folder's
    `generation_config.json`)."""

    num_beams: int | None = field(default=None, metadata={
        "help": "beam width (default: the checkpoint's; LAVIS InstructBLIP 5, transformers folders their "
                "generation_config.json); 1 streams tokens in `mixkit chat`"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "most new tokens (default: the checkpoint's; LAVIS InstructBLIP 255 Vicuna / 256 Flan-T5)"})
    min_new_tokens: int | None = field(default=None, metadata={
        "help": "fewest new tokens (default: the checkpoint's)"})
    length_penalty: float | None = field(default=None, metadata={
        "help": "beam length penalty (default: the checkpoint's; LAVIS InstructBLIP 1)"})
    repetition_penalty: float | None = field(default=None, metadata={
        "help": "penalty on tokens already generated, > 0 (default: the checkpoint's; LAVIS InstructBLIP 1.5)"})

    def check(self) -> None:
        super().check()
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError(f"--repetition-penalty: must be > 0, got {self.repetition_penalty}")

    def apply(self, base: GenerationSettings) -> GenerationSettings:
        return super().apply(base).with_overrides(repetition_penalty=self.repetition_penalty)
