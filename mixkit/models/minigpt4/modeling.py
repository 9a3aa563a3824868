"""MiniGPT-4 and MiniGPT-v2: BLIP-2's image side, a linear `llama_proj`, a (LoRA-adapted) Llama.

As the official code runs them (Vision-CAIR/MiniGPT-4 d94738a, `minigpt4/models/minigpt4.py::encode_img`,
`minigpt_v2.py::encode_img`, `minigpt_base.py`):

- image features are the ViT's outputs after `ln_vision` (our `vision_model.post_layernorm`);
- with a Q-Former (MiniGPT-4 Vicuna): the 32 query outputs go through `llama_proj`;
- without one (MiniGPT-4 Llama-2, MiniGPT-v2): the CLS token is dropped and each group of 4 consecutive patch
  tokens (raster order) is concatenated into one vector before `llama_proj` (`view(bs, pn / 4, hs * 4)`);
- everything but `llama_proj` (and MiniGPT-v2's LoRA weights) is frozen, the frozen towers in eval mode
  (`disabled_train`), `ln_vision` included.

The model works on embeddings: text ids with the image slots marked (`image_mask`) become one embedding
sequence (`input_embeddings`); tokenization and templates live in the pipeline and the collator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2VisionConfig, LlamaConfig, LlamaForCausalLM

from mixkit.models.blip2.modeling import read_weights_with_base, write_base_model_note
from mixkit.models.blip2.qformer import QFormer
from mixkit.models.blip2.vision import VisionTransformer
from mixkit.models.minigpt4.config import MiniGPT4Config
from mixkit.models.serialization import build_and_load, save_weights

LORA_ADAPTER = "default"  # peft's adapter name: keys read `...q_proj.lora_A.default.weight`


def add_lora(language_model: nn.Module, config: MiniGPT4Config) -> None:
    """peft LoRA layers injected in place (no wrapper, so the Llama keeps its key names apart from the
    adapted projections: `q_proj.base_layer.weight`, `q_proj.lora_A.default.weight`, ...)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:  # pragma: no cover - the extra is part of `test`
        raise ImportError("MiniGPT-v2 needs peft for its LoRA layers: pip install 'mixkit[lora]'") from error
    lora = config.lora
    assert lora is not None
    settings = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules), bias="none")
    inject_adapter_in_model(settings, language_model, adapter_name=LORA_ADAPTER)


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


class MiniGPT4Model(nn.Module):
    def __init__(self, config: MiniGPT4Config):
        super().__init__()
        self.config = config
        self.vision_model = VisionTransformer(Blip2VisionConfig(**config.vision_config))
        self.qformer: QFormer | None = None
        if config.qformer_config is not None:
            qformer_config = Blip2QFormerConfig(**config.qformer_config)
            self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, qformer_config.hidden_size))
            self.qformer = QFormer(qformer_config)
        text_config = LlamaConfig(**config.text_config)
        self.llama_proj = nn.Linear(config.image_feature_size, text_config.hidden_size)
        self.language_model = LlamaForCausalLM(text_config)
        if config.lora is not None:
            add_lora(self.language_model, config)
        self.frozen = False

    # ---------------------------------------------------------------- training setup

    def lock_frozen_parts(self) -> None:
        """The official setting: ViT, `ln_vision`, Q-Former, queries and the LLM frozen (in eval mode); only
        `llama_proj` (and LoRA weights when present) train."""
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name.startswith("llama_proj.") or is_lora_parameter(name))
        self.frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> MiniGPT4Model:
        super().train(mode)
        if self.frozen:  # `disabled_train` in the official code: frozen towers never run dropout
            self.vision_model.eval()
            if self.qformer is not None:
                self.qformer.eval()
            if self.config.lora is None:
                self.language_model.eval()
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.vision_model.encoder.gradient_checkpointing = enabled
        if self.qformer is not None:
            self.qformer.gradient_checkpointing = enabled
        if enabled:  # `use_grad_checkpoint_llm` in minigpt_v2.py
            self.language_model.gradient_checkpointing_enable()
        else:
            self.language_model.gradient_checkpointing_disable()

    def set_inference_dtypes(self, vision_dtype: torch.dtype, language_dtype: torch.dtype) -> None:
        """The official dtype policy (`vit_precision: fp16`, the LLM loaded in fp16); `ln_vision`, the
        Q-Former and `llama_proj` stay fp32 and their outputs are cast."""
        self.vision_model.embeddings.to(vision_dtype)
        self.vision_model.encoder.to(vision_dtype)
        self.language_model.to(language_dtype)

    # ---------------------------------------------------------------- computing

    @property
    def language_dtype(self) -> torch.dtype:
        return self.language_model.get_input_embeddings().weight.dtype

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ViT features after `ln_vision`: [batch, 1 + patches, vision hidden]."""
        return self.vision_model(pixel_values)

    def image_tokens(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """What the LLM sees of each image: [batch, tokens, LLM hidden], in the LLM's dtype."""
        if self.qformer is not None:
            queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
            features = self.qformer(queries, query_length=queries.shape[1], image_embeds=image_embeds).last_hidden_state
        else:
            patches = image_embeds[:, 1:, :]
            batch, count, width = patches.shape
            group = self.config.patches_per_token
            if count % group:
                raise ValueError(f"{count} patch tokens cannot be grouped {group} at a time: pick an image size whose "
                                 f"patch grid holds a multiple of {group} patches")
            features = patches.reshape(batch, count // group, width * group)
        return self.llama_proj(features.to(self.llama_proj.weight.dtype)).to(self.language_dtype)

    def num_image_tokens(self, image_size: int) -> int:
        """LLM positions per image at this input size."""
        if self.config.qformer_config is not None:
            return self.config.num_query_tokens
        patches = (image_size // int(self.config.vision_config["patch_size"])) ** 2
        return patches // self.config.patches_per_token

    def input_embeddings(self, input_ids: torch.Tensor, image_mask: torch.Tensor,
                         image_tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the image slots (`image_mask` True, any id there) replaced, in order, by the
        rows of `image_tokens` ([images, tokens, hidden], one image per row's run of slots)."""
        embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        slots = int(image_mask.sum())
        if slots != image_tokens.shape[0] * image_tokens.shape[1]:
            raise ValueError(f"{slots} image slots in the prompt but {image_tokens.shape[0]} images of "
                             f"{image_tokens.shape[1]} tokens")
        embeds = embeds.clone()
        embeds[image_mask] = image_tokens.reshape(-1, image_tokens.shape[-1]).to(embeds.dtype)
        return embeds

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits over the whole sequence ([batch, length, vocab])."""
        tokens = self.image_tokens(self.encode_image(pixel_values))
        embeds = self.input_embeddings(input_ids, image_mask, tokens)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask).logits

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """New token ids only (the prompt is given as embeddings, left-padded)."""
        return self.language_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    # ---------------------------------------------------------------- files

    def save_pretrained(self, directory: str | Path, base_model: str | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """`config.json` + `model.safetensors`; with `base_model`, only the trainable weights and
        `mixkit_base.json` naming where the rest comes from (as BLIP-2 checkpoints do)."""
        directory = Path(directory)
        self.config.save(directory)
        save_weights(self, directory, only_trainable=base_model is not None, state=state_dict)
        write_base_model_note(directory, base_model)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MiniGPT4Model:
        """Strict load, parameters built on `meta` and assigned the memory-mapped checkpoint tensors."""
        config = MiniGPT4Config.load(directory)
        return build_and_load(lambda: cls(config), read_weights_with_base(Path(directory)))


def left_padded(embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths [length, hidden] -> [batch, longest, hidden] and its mask, padded on the left
    with zero vectors, as `MiniGPTBase.generate` pads."""
    longest = max(row.shape[0] for row in embeds)
    batch = embeds[0].new_zeros(len(embeds), longest, embeds[0].shape[-1])
    mask = torch.zeros(len(embeds), longest, dtype=torch.long, device=embeds[0].device)
    for index, row in enumerate(embeds):
        batch[index, longest - row.shape[0]:] = row
        mask[index, longest - row.shape[0]:] = 1
    return batch, mask


__all__ = ["MiniGPT4Model", "add_lora", "is_lora_parameter", "left_padded"]
