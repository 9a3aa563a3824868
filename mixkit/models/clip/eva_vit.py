"""The EVA-02 vision tower of EVA-CLIP, on mixkit's EVA ViT embeddings (`mixkit.models.blip2.vision`).

What EVA-02 changes in the EVA ViT block (baaivision/EVA, `EVA-CLIP/rei/eva_clip/eva_vit_model.py` and
`rope.py`, commit 322427b):
- **2-D rotary position embeddings** (`VisionRotaryEmbeddingFast`) on queries and keys of the patch tokens (the
  class token is left as is): half of each head's channels rotate with the patch row, half with the column; the
  frequencies are `theta ** (-(0, 2, 4, ...) / (head_dim / 2))` and the positions `arange(grid) / grid * 16`
  (`pt_hw_seq_len` 16 with `intp_freq`); channels rotate in adjacent pairs (`rotate_half` on `(d r), r=2`).
- **SwiGLU** feed-forward: `w3(ffn_ln(silu(w1 x) * w2 x))`.
- **sub-LN**: a LayerNorm inside attention before the output projection (`inner_attn_ln`) and one inside the
  feed-forward (`ffn_ln`); separate q/k/v projections, biases on q and v only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixkit.models.blip2.checkpointing import run_layers
from mixkit.models.blip2.vision import VisionEmbeddings
from mixkit.models.clip.eva_config import EvaVisionConfig


def rotary_angles(head_dim: int, grid: int, pretrain_grid: int, theta: float) -> torch.Tensor:
    """[grid * grid, head_dim] rotation angles, patches in row-major order: the first half of the channels
    from the row, the second from the column, each frequency repeated for its pair of channels."""
    quarter = torch.arange(0, head_dim // 2, 2)[: head_dim // 4].float()
    frequencies = 1.0 / theta ** (quarter / (head_dim // 2))
    positions = torch.arange(grid).float() / grid * pretrain_grid
    per_axis = torch.outer(positions, frequencies).repeat_interleave(2, dim=-1)  # [grid, head_dim / 2]
    rows = per_axis[:, None, :].expand(grid, grid, -1)
    columns = per_axis[None, :, :].expand(grid, grid, -1)
    return torch.cat([rows, columns], dim=-1).reshape(grid * grid, head_dim)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): a quarter turn of each adjacent channel pair."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class RotaryEmbedding2D(nn.Module):
    """Rotates the patch tokens of [batch, heads, 1 + patches, head_dim]; the class token stays."""

    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        angles = rotary_angles(config.head_dim, config.grid_size, config.rope_pretrain_grid, config.rope_theta)
        # Computed, not stored: EVA-CLIP files hold these tables, the converter checks them against ours.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x[..., 1:, :]
        if patches.shape[-2] != self.cos.shape[0]:
            raise ValueError(f"{patches.shape[-2]} patches, but the rotary table is for {self.cos.shape[0]}: "
                             "EVA-02 runs at its configured image size")
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        return torch.cat([x[..., :1, :], patches * cos + rotate_pairs(patches) * sin], dim=-2)


class EvaAttention(nn.Module):
    def __init__(self, config: EvaVisionConfig, rotary: RotaryEmbedding2D):
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_proj = nn.Linear(width, width, bias=config.qkv_bias)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=config.qkv_bias)
        self.inner_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.out_proj = nn.Linear(width, width)
        self.rotary = [rotary]  # in a list: one shared table, not a submodule of every layer

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        rotary = self.rotary[0]
        query = rotary(self._heads(self.q_proj(hidden_states)))
        key = rotary(self._heads(self.k_proj(hidden_states)))
        value = self._heads(self.v_proj(hidden_states))
        attended = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).flatten(2)
        return self.out_proj(self.inner_norm(attended))


class SwiGLU(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.inner_norm = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.inner_norm(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class EvaLayer(nn.Module):
    """Pre-norm block: x + attn(norm1 x), then x + mlp(norm2 x)."""

    def __init__(self, config: EvaVisionConfig, rotary: RotaryEmbedding2D):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EvaAttention(config, rotary)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class EvaVisionModel(nn.Module):
    """Patch embedding (mixkit's EVA ViT embeddings), EVA-02 layers, final LayerNorm; pools the class token."""

    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = VisionEmbeddings(config)  # reads hidden_size, patch_size, image_size
        self.rotary = RotaryEmbedding2D(config)
        self.layers = nn.ModuleList(EvaLayer(config, self.rotary) for _ in range(config.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[batch, 1 + patches, hidden] after the final LayerNorm."""
        hidden_states = self.embeddings(pixel_values)
        hidden_states = run_layers(self.layers, hidden_states, checkpoint=self.gradient_checkpointing and self.training)
        return self.post_layernorm(hidden_states)


__all__ = ["EvaVisionModel", "RotaryEmbedding2D", "rotary_angles", "rotate_pairs"]
