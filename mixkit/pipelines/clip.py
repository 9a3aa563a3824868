"""Zero-shot classification with a CLIP checkpoint saved by `transformers` (`CLIPModel`).

Public interface:
- `image_features(images)` and `text_features(texts)`: L2-normalised projected embeddings;
- `classify(images, labels, template)`: softmax over labels of `logit_scale.exp()` times the cosine, the
  `logits_per_image` of `transformers`' `CLIPModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, PreTrainedTokenizerBase

from mixkit.models.hub import check_checkpoint_dir, resolve_checkpoint
from mixkit.pipelines.common import ImageInput
from mixkit.pipelines.common import as_images, batches, pick_device
from mixkit.pipelines.options import DEFAULT_TEMPLATE, label_prompts


class ClipPipeline:
    """A `transformers` `CLIPModel`, its tokenizer and image processor."""

    family = "clip"
    tasks = ("classify",)

    def __init__(self, model: CLIPModel, tokenizer: PreTrainedTokenizerBase, image_processor,
                 device: torch.device | str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, device: str | None = None, fp32: bool = True) -> ClipPipeline:
        """A catalogue name or a folder with `config.json`, `model.safetensors`, tokenizer and
        `preprocessor_config.json`. Runs in fp32 (`fp32` is accepted so every pipeline loads alike)."""
        directory = resolve_checkpoint(str(name_or_dir))
        files = check_checkpoint_dir(directory)
        if not files.tokenizer:
            raise FileNotFoundError(f"{directory}: no tokenizer files (CLIP's BPE tokenizer)")
        if files.processor is None:
            raise FileNotFoundError(f"{directory}: no preprocessor_config.json (CLIP's image processor)")
        model = CLIPModel.from_pretrained(str(directory), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        image_processor = AutoImageProcessor.from_pretrained(str(directory))
        target = pick_device(device)
        return cls(model.to(target), tokenizer, image_processor, target)

    @property
    def logit_scale(self) -> float:
        """The learned inverse temperature, exp(logit_scale)."""
        return self.model.logit_scale.exp().item()

    @torch.no_grad()
    def image_features(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """[images, projection dim], L2-normalised."""
        pixels = self.image_processor(images=as_images(images), return_tensors="pt").pixel_values
        embeds = self.model.get_image_features(pixel_values=pixels.to(self.device)).pooler_output
        return embeds / embeds.norm(p=2, dim=-1, keepdim=True)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """[texts, projection dim], L2-normalised; padded to the longest, truncated to the model's context."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                                max_length=self.model.config.text_config.max_position_embeddings)
        embeds = self.model.get_text_features(input_ids=tokens.input_ids.to(self.device),
                                              attention_mask=tokens.attention_mask.to(self.device)).pooler_output
        return embeds / embeds.norm(p=2, dim=-1, keepdim=True)

    @torch.no_grad()
    def classify(self, images: Sequence[ImageInput], labels: Sequence[str], template: str = DEFAULT_TEMPLATE,
                 batch_size: int = 8) -> torch.Tensor:
        """[images, labels] probabilities on the CPU: softmax of exp(logit_scale) * cosine, labels in order."""
        text_feats = self.text_features(label_prompts(labels, template))
        scale = self.model.logit_scale.exp()
        probs = [(scale * self.image_features(batch) @ text_feats.T).softmax(-1).float().cpu()
                 for batch in batches(list(images), batch_size)]
        return torch.cat(probs)


__all__ = ["ClipPipeline"]
