"""The typed config of a MiniGPT-4 / MiniGPT-v2 checkpoint, saved as its `config.json`.

Three variants share one architecture (Vision-CAIR/MiniGPT-4 at d94738a, `minigpt4/models/minigpt4.py`,
`minigpt_v2.py`, `minigpt_base.py`):

- **MiniGPT-4 (Vicuna v0)**: BLIP-2's EVA ViT-g, `ln_vision`, Q-Former and 32 queries (all frozen), then the
  trainable `llama_proj` into a frozen Vicuna: `qformer_config` set.
- **MiniGPT-4 (Llama-2)** and **MiniGPT-v2**: no Q-Former; the ViT's patch tokens (CLS dropped) are grouped 4
  consecutive at a time (raster order) and concatenated, `llama_proj` maps 4 x 1408 -> LLM width:
  `qformer_config` None, `patches_per_token` 4. MiniGPT-v2 adds LoRA (r 64, alpha 16, dropout 0.05 on
  `q_proj`, `v_proj`) on Llama-2-chat and reads 448 px images.

The sub-configs are the plain dicts of `transformers`' `Blip2VisionConfig`, `Blip2QFormerConfig` and
`LlamaConfig`, so the weights keep their Hugging Face key names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixkit.models.layout import CONFIG_NAME

MODEL_TYPE = "minigpt4"
ARCHITECTURE = "MiniGPT4Model"
TEMPLATE_NAMES = ("vicuna0", "llama2", "minigptv2")


@dataclass(frozen=True)
class LoraSettings:
    """peft `LoraConfig` fields MiniGPT-v2 uses (`minigpt_base.py` defaults, `minigpt_v2.yaml`: r 64, alpha 16)."""

    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules:
            raise ValueError(f"lora: need r >= 1, alpha > 0, 0 <= dropout < 1 and target modules, got {self}")


@dataclass
class MiniGPT4Config:
    vision_config: dict[str, Any]  # Blip2VisionConfig fields
    text_config: dict[str, Any]  # LlamaConfig fields
    qformer_config: dict[str, Any] | None = None  # None: patch tokens go straight to llama_proj
    num_query_tokens: int = 32
    patches_per_token: int = 4
    conversation_template: str = "vicuna0"  # one of TEMPLATE_NAMES (mixkit.models.minigpt4.templates)
    lora: LoraSettings | None = None
    architectures: list[str] = field(default_factory=lambda: [ARCHITECTURE])
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.conversation_template not in TEMPLATE_NAMES:
            raise ValueError(f"conversation_template {self.conversation_template!r} is not one of {TEMPLATE_NAMES}")
        if self.qformer_config is not None and self.num_query_tokens < 1:
            raise ValueError(f"num_query_tokens must be >= 1 with a Q-Former, got {self.num_query_tokens}")
        if self.qformer_config is None and self.patches_per_token < 1:
            raise ValueError(f"patches_per_token must be >= 1, got {self.patches_per_token}")
        if self.qformer_config is not None:  # the Q-Former's cross-attention reads the ViT (as Blip2Config sets it)
            self.qformer_config = {**self.qformer_config, "encoder_hidden_size": self.vision_config["hidden_size"]}
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type {self.model_type!r} is not {MODEL_TYPE!r}")

    @property
    def has_qformer(self) -> bool:
        return self.qformer_config is not None

    @property
    def image_feature_size(self) -> int:
        """What `llama_proj` reads: the Q-Former width, or `patches_per_token` ViT widths side by side."""
        if self.qformer_config is not None:
            return int(self.qformer_config["hidden_size"])
        return int(self.vision_config["hidden_size"]) * self.patches_per_token

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> MiniGPT4Config:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no config.json (a MiniGPT-4 folder holds config.json, "
                                    "model.safetensors, the Llama tokenizer and preprocessor_config.json)")
        data = json.loads(path.read_text())
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown MiniGPT-4 config keys {unknown}")
        return cls(**data)
