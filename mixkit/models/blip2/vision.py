"""The EVA-CLIP ViT image encoder that BLIP-2 keeps frozen.

State-dict keys follow `transformers`' `Blip2VisionModel`, so Hub checkpoints load unchanged. Attention runs
through `scaled_dot_product_attention`. BLIP-2's `ln_vision` is `post_layernorm` here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2VisionConfig
from transformers.activations import ACT2FN

from mixkit.models.blip2.checkpointing import run_layers
from mixkit.utils.onednn import linear_with_bias


class VisionEmbeddings(nn.Module):
    """Patch embedding, class token and learned position embedding (interpolated for other image sizes)."""

    def __init__(self, config: Blip2VisionConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embedding = nn.Conv2d(3, config.hidden_size, config.patch_size, config.patch_size)
        num_positions = (config.image_size // config.patch_size) ** 2 + 1
        self.position_embedding = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))

    def interpolated_positions(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """Bicubic resize of the patch position grid (224 px -> 364 px fine-tuning), class position kept."""
        num_patches = self.position_embedding.shape[1] - 1
        if grid_height * grid_width == num_patches and grid_height == grid_width:
            return self.position_embedding
        side = int(num_patches**0.5)
        dim = self.position_embedding.shape[-1]
        grid = self.position_embedding[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(grid_height, grid_width), mode="bicubic", align_corners=False)
        grid = grid.to(self.position_embedding.dtype).permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([self.position_embedding[:, :1], grid], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype))
        grid_height, grid_width = patches.shape[-2:]
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1).to(dtype)
        embeddings = torch.cat([cls, patches], dim=1)
        return embeddings + self.interpolated_positions(grid_height, grid_width).to(dtype)


class VisionAttention(nn.Module):
    """Fused-qkv self-attention. EVA has query and value biases but no key bias: the middle third of
    `qkv.bias` is ignored in the forward pass, so training the ViT can never grow a key bias. BLIP's ViT
    (a `BlipVisionConfig`, no `qkv_bias` field) has all three biases, as `transformers`' `BlipAttention`."""

    def __init__(self, config: Blip2VisionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.embed_dim = config.hidden_size
        self.dropout = config.attention_dropout
        self.key_bias = not isinstance(config, Blip2VisionConfig)
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=getattr(config, "qkv_bias", True))
        self.projection = nn.Linear(self.embed_dim, self.embed_dim)

    def _qkv_bias(self) -> torch.Tensor | None:
        bias = self.qkv.bias
        if bias is None or self.key_bias:
            return bias
        dim = self.embed_dim
        return torch.cat([bias[:dim], torch.zeros_like(bias[dim : 2 * dim]), bias[2 * dim :]])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        qkv = linear_with_bias(self.qkv, hidden_states, self._qkv_bias())
        qkv = qkv.reshape(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=dropout)
        return self.projection(attended.transpose(1, 2).reshape(batch, length, self.embed_dim))


class VisionMLP(nn.Module):
    def __init__(self, config: Blip2VisionConfig):
        super().__init__()
        self.activation = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class VisionLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: Blip2VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = VisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class VisionEncoder(nn.Module):
    def __init__(self, config: Blip2VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return run_layers(self.layers, hidden_states, checkpoint=self.gradient_checkpointing and self.training)


class VisionTransformer(nn.Module):
    """EVA ViT-g/14 (any depth/width) followed by BLIP-2's output LayerNorm."""

    def __init__(self, config: Blip2VisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = VisionEmbeddings(config)
        self.encoder = VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image patch features [batch, 1 + patches, hidden]; any image size divisible by the patch size."""
        hidden_states = self.encoder(self.embeddings(pixel_values))
        # The frozen trunk may run in half precision; ln_vision is trainable and runs in its own dtype.
        return self.post_layernorm(hidden_states.to(self.post_layernorm.weight.dtype))
