"""Typed configuration of EVA-CLIP (EVA-02 vision tower + CLIP text tower), saved as `config.json`.

The EVA-02 CLIP towers (baaivision/EVA, `EVA-CLIP/rei/eva_clip/model_configs/EVA02-CLIP-*.json` and
`eva_vit_model.py`): rotary position embeddings on the patch tokens (`rope`, `pt_hw_seq_len` 16,
`intp_freq`), SwiGLU feed-forward (`naiveswiglu`) with a LayerNorm inside it and inside attention before the
output projection (`subln`), separate q/k/v projections with q and v biases only, LayerNorm eps 1e-6, the
class token after a final LayerNorm projected by a linear `head` with bias. EVA01-CLIP (no rotary, plain MLP)
is not this layout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixkit.models.layout import CONFIG_NAME

MODEL_TYPE = "eva_clip"
ARCHITECTURE = "EvaClipModel"


@dataclass
class EvaVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 2048  # int(width * mlp_ratio); EVA02-CLIP uses mlp_ratio 2.6667
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 16
    qkv_bias: bool = True  # q and v biases (EVA attention never has a key bias)
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_pretrain_grid: int = 16  # EVA `pt_hw_seq_len`: the grid the rotary positions are scaled to

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")
        if self.head_dim % 4:
            raise ValueError(f"head dim {self.head_dim} must be a multiple of 4 (2-D rotary pairs)")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class EvaClipConfig:
    vision_config: EvaVisionConfig = field(default_factory=EvaVisionConfig)
    text_config: dict[str, Any] = field(default_factory=dict)  # `transformers.CLIPTextConfig` arguments
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592  # ln(1 / 0.07), CLIP's initial temperature

    def __post_init__(self) -> None:
        if isinstance(self.vision_config, dict):
            self.vision_config = EvaVisionConfig(**self.vision_config)
        if self.projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1, got {self.projection_dim}")

    def clip_text_config(self):
        from transformers import CLIPTextConfig

        return CLIPTextConfig(**self.text_config)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, "architectures": [ARCHITECTURE], **asdict(self)}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> EvaClipConfig:
        path = Path(directory) / CONFIG_NAME
        data = json.loads(path.read_text())
        if data.pop("model_type", None) != MODEL_TYPE:
            raise ValueError(f"{path}: not an EVA-CLIP config (model_type must be {MODEL_TYPE!r})")
        data.pop("architectures", None)
        try:
            return cls(**data)
        except TypeError as error:
            raise ValueError(f"{path}: {error}") from None


__all__ = ["ARCHITECTURE", "MODEL_TYPE", "EvaClipConfig", "EvaVisionConfig"]
