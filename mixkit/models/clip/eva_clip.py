"""EVA-CLIP: the EVA-02 vision tower and CLIP's text tower, with CLIP's interface (`get_image_features`,
`get_text_features`, `logit_scale`).

The text tower of EVA02-CLIP is open_clip's `TextTransformer` (baaivision/EVA, `EVA-CLIP/rei/eva_clip/model.py`
`_build_text_tower`, `transformer.py`): the same computation as `transformers`' `CLIPTextModel`, so that class
is used as is (keys `text_model.*`, GELU, LayerNorm eps 1e-5). The vision `head` is a linear layer with a bias
(`visual_projection`); the text projection has none. Keys follow `CLIPModel` wherever the modules match.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mixkit.models.clip.eva_config import EvaClipConfig
from mixkit.models.clip.eva_vit import EvaVisionModel
from mixkit.models.serialization import build_and_load, read_weights, save_weights


class EvaClipModel(nn.Module):
    def __init__(self, config: EvaClipConfig):
        from transformers import CLIPTextModel

        super().__init__()
        self.config = config
        self.vision_model = EvaVisionModel(config.vision_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim)
        text_config = config.clip_text_config()
        self.text_model = CLIPTextModel(text_config)
        self.text_projection = nn.Linear(text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[batch, projection dim], not normalised: the projected class token."""
        dtype = self.visual_projection.weight.dtype
        return self.visual_projection(self.vision_model(pixel_values.to(dtype))[:, 0])

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, projection dim], not normalised: the projected end-of-text token."""
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """logits_per_image [images, texts]: exp(logit_scale) times the cosine, as `CLIPModel`."""
        image = self.get_image_features(pixel_values)
        text = self.get_text_features(input_ids, attention_mask)
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * image @ text.t()

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        save_weights(self, directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EvaClipModel:
        """`config.json` + `model.safetensors`, loaded strictly onto parameters built on `meta`."""
        config = EvaClipConfig.load(directory)
        return build_and_load(lambda: cls(config), read_weights(Path(directory)))


__all__ = ["EvaClipModel"]
