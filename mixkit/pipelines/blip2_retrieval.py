"""Image-text matching with a stage-1 BLIP-2 checkpoint: ITC similarities and ITM scores.

Public interface (what retrieval evaluation and `predict match`/`classify` build on):
- `tokenize(texts)` and `text_features(tokens)`: L2-normalised text embeddings (LAVIS tokenizes retrieval texts
  to at most 35 tokens);
- `image_features(images)`: ViT outputs (kept for ITM) and L2-normalised query embeddings (for ITC);
- `itc_similarity(image_feats, text_feats)`: the best-query cosine, as LAVIS ranks;
- `itm_logits(image_embeds, input_ids, attention_mask)`: the match logit per (image, text) pair;
- `match(images, texts)`: both scores for aligned pairs, as probabilities and cosines;
- `classify(images, labels, template)`: zero-shot probabilities over labels from the ITC logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig
from mixkit.models.blip2.stage1 import Blip2Stage1Model, ImageFeatures
from mixkit.models.hub import check_checkpoint_dir, resolve_checkpoint
from mixkit.pipelines.common import ImageInput, ItcClassifier, pixel_batch, place_model

MAX_TEXT_LENGTH = 35  # LAVIS compute_sim_matrix tokenizes retrieval texts to 35 tokens


class Blip2RetrievalPipeline(ItcClassifier):
    """A stage-1 BLIP-2 checkpoint (Q-Former with text blocks), its BERT tokenizer and image preprocessing
    (`classify`: `ItcClassifier`'s, over the best-query cosine divided by the learned `temp`)."""

    family = "blip2"
    tasks = ("retrieval", "itm", "itc", "classify", "match")

    def __init__(self, model: Blip2Stage1Model, tokenizer: PreTrainedTokenizerBase,
                 image_config: ImageProcessorConfig, device: torch.device | str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = EvalImageTransform(image_config)
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, device: str | None = None,
                        fp32: bool = True) -> Blip2RetrievalPipeline:
        """A complete stage-1 folder or catalogue name; every gap raises FileNotFoundError / ValueError.
        The model always runs in fp32 (`fp32` is accepted so every pipeline loads with the same options)."""
        directory = resolve_checkpoint(str(name_or_dir))
        if not check_checkpoint_dir(directory).tokenizer:
            raise FileNotFoundError(f"{directory}: no tokenizer files (the Q-Former's BERT tokenizer)")
        image_config = ImageProcessorConfig.load(directory)
        model = Blip2Stage1Model.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        vocab = model.config.qformer_config.vocab_size
        if len(tokenizer) > vocab:
            raise ValueError(f"{directory}: the tokenizer has {len(tokenizer)} tokens, the Q-Former vocabulary {vocab}")
        target = place_model(model, device)
        return cls(model, tokenizer, image_config, target)

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        """Right-padded to the longest, truncated to LAVIS's 35 tokens; on the CPU."""
        return self.tokenizer(list(texts), padding="longest", truncation=True, max_length=MAX_TEXT_LENGTH,
                              padding_side="right", return_tensors="pt")

    @torch.no_grad()
    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised [CLS] projections [texts, embed dim]."""
        return self.model.text_features(input_ids.to(self.device), attention_mask.to(self.device))

    @torch.no_grad()
    def image_features(self, images: Sequence[ImageInput]) -> ImageFeatures:
        return self.model.encode_image_features(pixel_batch(self.transform, images, self.device))

    def itc_similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """[images, texts]: cosine of the best-matching query, no temperature (how LAVIS ranks)."""
        return self.model.best_query_cosine(image_feats, text_feats)

    @torch.no_grad()
    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """The "match" logit of each (image, text) row (LAVIS `compute_itm`), fp32 on the CPU."""
        logits = self.model.itm_logits(image_embeds.to(self.device), input_ids.to(self.device),
                                       attention_mask.to(self.device))
        return logits[:, 1].float().cpu()

    @torch.no_grad()
    def match(self, images: Sequence[ImageInput], texts: Sequence[str]) -> dict[str, list[float]]:
        """For aligned (image, text) pairs: ITM match probability and ITC cosine."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        features, tokens = self.image_features(images), self.tokenize(texts)
        text_feats = self.text_features(tokens.input_ids, tokens.attention_mask)
        cosine = self.itc_similarity(features.image_feats, text_feats).diagonal()
        logits = self.model.itm_logits(features.image_embeds, tokens.input_ids.to(self.device),
                                       tokens.attention_mask.to(self.device))
        return {"itm": logits.softmax(-1)[:, 1].float().cpu().tolist(), "itc": cosine.float().cpu().tolist()}


__all__ = ["MAX_TEXT_LENGTH", "Blip2RetrievalPipeline"]
