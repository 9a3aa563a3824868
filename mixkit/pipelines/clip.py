"""Zero-shot classification and retrieval with CLIP checkpoints: `transformers` `CLIPModel` folders (OpenAI's
weights on the Hub, open_clip weights converted by `mixkit.models.clip.convert_open_clip`) and EVA-CLIP folders
(`mixkit.models.clip.eva_clip.EvaClipModel`, `model_type` "eva_clip"); the same tokenizer and image processor
files for both.

Public interface:
- `image_features(images)` and `text_features(texts)`: L2-normalised projected embeddings (`text_features` also
  takes the token ids and mask of `tokenize(texts)`, as the retrieval pipelines do);
- `itc_similarity(image_feats, text_feats)`: the cosine matrix [images, texts] (how CLIP ranks; no ITM head);
- `class_features(classnames, templates)`: the zero-shot classifier, one L2-normalised row per class: the mean of
  the normalised features of the class's prompts, renormalised (CLIP's prompt ensembling; open_clip
  `zero_shot_classifier.py` `build_zero_shot_classifier`);
- `classify(images, labels, template)`: softmax over labels of `logit_scale.exp()` times the cosine, the
  `logits_per_image` of `transformers`' `CLIPModel`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (AutoImageProcessor, AutoTokenizer, BatchEncoding, CLIPImageProcessor, CLIPModel,
                          CLIPTokenizer, PreTrainedTokenizerBase)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mixkit.models.clip.eva_clip import EvaClipModel
from mixkit.models.clip.eva_config import MODEL_TYPE as EVA_CLIP_MODEL_TYPE

from mixkit.models.hub import check_checkpoint_dir, resolve_checkpoint
from mixkit.models.layout import CONFIG_NAME
from mixkit.pipelines.common import ImageInput
from mixkit.pipelines.common import as_images, batches, place_model
from mixkit.pipelines.options import DEFAULT_TEMPLATE, label_prompts


class ClipPipeline:
    """A `transformers` `CLIPModel`, its tokenizer and image processor."""

    family = "clip"
    tasks = ("classify", "match", "retrieval", "itc")

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
        model = load_clip_model(directory)
        # The Auto classes cannot read an "eva_clip" config.json (a model type transformers lacks): name the classes.
        eva = isinstance(model, EvaClipModel)
        tokenizer = (CLIPTokenizer if eva else AutoTokenizer).from_pretrained(str(directory))
        image_processor = (CLIPImageProcessor if eva else AutoImageProcessor).from_pretrained(str(directory))
        target = place_model(model, device)
        return cls(model, tokenizer, image_processor, target)

    @property
    def logit_scale(self) -> float:
        """The learned inverse temperature, exp(logit_scale)."""
        return self.model.logit_scale.exp().item()

    @torch.no_grad()
    def image_features(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """[images, projection dim], L2-normalised."""
        pixels = self.image_processor(images=as_images(images), return_tensors="pt").pixel_values
        embeds = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return embeds / embeds.norm(p=2, dim=-1, keepdim=True)

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        """Padded to the longest, truncated to the model's context; on the CPU."""
        return self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                              max_length=self.model.text_model.config.max_position_embeddings)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str] | torch.Tensor,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[texts, projection dim], L2-normalised: of texts, or of `tokenize`'s ids and mask."""
        if not isinstance(texts, torch.Tensor):
            tokens = self.tokenize(texts)
            texts, attention_mask = tokens.input_ids, tokens.attention_mask
        mask = attention_mask.to(self.device) if attention_mask is not None else None
        embeds = _pooled(self.model.get_text_features(input_ids=texts.to(self.device), attention_mask=mask))
        return embeds / embeds.norm(p=2, dim=-1, keepdim=True)

    def itc_similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """[images, texts] cosine similarities (no temperature: ranking needs none)."""
        return image_feats @ text_feats.T

    @torch.no_grad()
    def class_features(self, classnames: Sequence[str], templates: Sequence[str],
                       batch_size: int = 256) -> torch.Tensor:
        """[classes, projection dim]: per class, the renormalised mean of its prompts' normalised features."""
        prompts = [template.format(name) for name in classnames for template in templates]
        feats = torch.cat([self.text_features(batch) for batch in batches(prompts, batch_size)])
        return ensemble_class_features(feats, len(classnames), len(templates))

    @torch.no_grad()
    def match(self, images: Sequence[ImageInput], texts: Sequence[str]) -> dict[str, list[float]]:
        """For aligned (image, text) pairs: the ITC cosine (CLIP has no matching head, so no "itm")."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        cosine = (self.image_features(images) * self.text_features(texts)).sum(-1)
        return {"itc": cosine.float().cpu().tolist()}

    @torch.no_grad()
    def classify(self, images: Sequence[ImageInput], labels: Sequence[str], template: str = DEFAULT_TEMPLATE,
                 batch_size: int = 8) -> torch.Tensor:
        """[images, labels] probabilities on the CPU: softmax of exp(logit_scale) * cosine, labels in order."""
        text_feats = self.text_features(label_prompts(labels, template))
        scale = self.model.logit_scale.exp()
        probs = [(scale * self.image_features(batch) @ text_feats.T).softmax(-1).float().cpu()
                 for batch in batches(list(images), batch_size)]
        return torch.cat(probs)


def ensemble_class_features(prompt_feats: torch.Tensor, num_classes: int, num_templates: int) -> torch.Tensor:
    """[classes * templates, dim] normalised prompt features, class-major -> [classes, dim]: the mean over
    each class's templates, renormalised (CLIP's prompt ensembling in embedding space)."""
    mean = prompt_feats.reshape(num_classes, num_templates, -1).mean(dim=1)
    return mean / mean.norm(p=2, dim=-1, keepdim=True)


def _pooled(output: torch.Tensor | BaseModelOutputWithPooling) -> torch.Tensor:
    # `CLIPModel.get_*_features` return a model output (transformers 5); `EvaClipModel`'s return the tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip_model(directory: Path) -> CLIPModel | EvaClipModel:
    """The model class the folder's `config.json` names: `EvaClipModel` for "eva_clip", else `CLIPModel`."""
    model_type = json.loads((Path(directory) / CONFIG_NAME).read_text()).get("model_type")
    if model_type == EVA_CLIP_MODEL_TYPE:
        return EvaClipModel.from_pretrained(directory)
    return CLIPModel.from_pretrained(str(directory), dtype=torch.float32)


__all__ = ["ClipPipeline", "ensemble_class_features", "load_clip_model"]
