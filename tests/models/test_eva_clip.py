"""EVA-CLIP: the EVA-02 rotary embedding checked by hand, conversion of a state dict in EVA-CLIP's published
layout, and the converted model's features against an independent reference forward written here in plain torch
(following baaivision/EVA `EVA-CLIP/rei/eva_clip/eva_vit_model.py` and `rope.py`: explicit softmax attention,
EVA's rotary construction, q/v biases only, sub-LN, SwiGLU, final norm on the class token, `head` with bias)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mixkit.models.clip.convert_eva_clip import EvaClipSpec, eva_clip_config, load_eva_clip_weights
from mixkit.models.clip.eva_clip import EvaClipModel
from mixkit.models.clip.eva_config import EvaVisionConfig
from mixkit.models.clip.eva_vit import RotaryEmbedding2D, rotary_angles
from mixkit.models.clip.keymap import ConversionError
from tests.models.test_clip_open_clip import quick_gelu, reference_text, text_tower, token_batch

WIDTH, HEADS, LAYERS, HIDDEN, PATCH, GRID, EMBED, PRETRAIN_GRID = 32, 2, 2, 40, 8, 3, 24, 16
HEAD_DIM = WIDTH // HEADS
EPS = 1e-6


# ---------------------------------------------------------------- rotary embedding, by hand


def test_rotary_angles_by_hand() -> None:
    # head_dim 8: frequencies 1 and 1/100 (theta ** -(0/4), theta ** -(2/4)); grid 2 at its own scale: rows and
    # columns at positions 0 and 1. Channels 0-3 turn with the row, 4-7 with the column, in pairs.
    angles = rotary_angles(head_dim=8, grid=2, pretrain_grid=2, theta=10000.0)
    expected = torch.tensor([
        [0, 0, 0, 0, 0, 0, 0, 0],                      # patch (row 0, column 0)
        [0, 0, 0, 0, 1, 1, 0.01, 0.01],                # patch (0, 1)
        [1, 1, 0.01, 0.01, 0, 0, 0, 0],                # patch (1, 0)
        [1, 1, 0.01, 0.01, 1, 1, 0.01, 0.01],          # patch (1, 1)
    ])
    torch.testing.assert_close(angles, expected)
    # EVA's interpolated positions: a 4-patch grid scaled to the 16-patch pretraining grid: 0, 4, 8, 12.
    torch.testing.assert_close(rotary_angles(8, 4, 16, 10000.0)[:4, 4], torch.tensor([0.0, 4.0, 8.0, 12.0]))


def test_rotary_turns_channel_pairs_and_leaves_the_class_token() -> None:
    config = EvaVisionConfig(hidden_size=8, intermediate_size=8, num_attention_heads=1, image_size=2, patch_size=1,
                             rope_pretrain_grid=2)
    rotary = RotaryEmbedding2D(config)
    x = torch.zeros(1, 1, 5, 8)
    x[..., 0] = 1.0  # e0 on the class token and every patch
    x[..., 4, 4] = 2.0  # patch (1, 1) also has 2 * e4
    out = rotary(x)
    torch.testing.assert_close(out[0, 0, 0], x[0, 0, 0])  # class token untouched
    torch.testing.assert_close(out[0, 0, 1, :2], torch.tensor([1.0, 0.0]))  # patch (0, 0): angle 0
    torch.testing.assert_close(out[0, 0, 3, :2], torch.tensor([math.cos(1), math.sin(1)]))  # (1, 0): row angle 1
    torch.testing.assert_close(out[0, 0, 4, 4:6], 2 * torch.tensor([math.cos(1), math.sin(1)]))  # column angle 1
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation keeps lengths


def test_rotary_scores_depend_on_relative_position_only() -> None:
    config = EvaVisionConfig(hidden_size=16, intermediate_size=8, num_attention_heads=1, image_size=4, patch_size=1,
                             rope_pretrain_grid=4)
    rotary = RotaryEmbedding2D(config)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    tokens = lambda v: rotary(v.expand(1, 1, 17, 16).clone())[0, 0, 1:]  # noqa: E731 - same vector at every patch
    rq, rk = tokens(q), tokens(k)
    # patches (0,0)-(1,2) and (2,1)-(3,3) are the same offset apart: same score; another offset: another score.
    torch.testing.assert_close(rq[0] @ rk[6], rq[9] @ rk[15])
    assert not torch.allclose(rq[0] @ rk[6], rq[0] @ rk[5])


# ---------------------------------------------------------------- EVA-CLIP layout and reference


def reference_rope_tables(head_dim: int, grid: int, pretrain: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As EVA's VisionRotaryEmbeddingFast builds them: dim = head_dim / 2, `(n r)` repeats, broadcast concat."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    t = torch.arange(grid) / grid * pretrain
    freqs = torch.einsum("i,f->if", t, freqs)
    freqs = torch.stack([freqs, freqs], dim=-1).reshape(grid, dim)
    full = torch.cat([freqs[:, None, :].expand(grid, grid, dim), freqs[None, :, :].expand(grid, grid, dim)], -1)
    return full.cos().reshape(grid * grid, head_dim), full.sin().reshape(grid * grid, head_dim)


def eva_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = text_tower(g, prefix="text.")
    cos, sin = reference_rope_tables(HEAD_DIM, GRID, PRETRAIN_GRID)
    sd.update({"visual.patch_embed.proj.weight": rand(WIDTH, 3, PATCH, PATCH, scale=0.1),
               "visual.patch_embed.proj.bias": rand(WIDTH), "visual.cls_token": rand(1, 1, WIDTH),
               "visual.pos_embed": rand(1, GRID * GRID + 1, WIDTH), "visual.rope.freqs_cos": cos,
               "visual.rope.freqs_sin": sin, "visual.norm.weight": 1 + rand(WIDTH), "visual.norm.bias": rand(WIDTH),
               "visual.head.weight": rand(EMBED, WIDTH), "visual.head.bias": rand(EMBED)})
    for i in range(LAYERS):
        p = f"visual.blocks.{i}."
        sd.update({p + "norm1.weight": 1 + rand(WIDTH), p + "norm1.bias": rand(WIDTH),
                   p + "norm2.weight": 1 + rand(WIDTH), p + "norm2.bias": rand(WIDTH),
                   p + "attn.q_proj.weight": rand(WIDTH, WIDTH), p + "attn.k_proj.weight": rand(WIDTH, WIDTH),
                   p + "attn.v_proj.weight": rand(WIDTH, WIDTH), p + "attn.q_bias": rand(WIDTH),
                   p + "attn.v_bias": rand(WIDTH), p + "attn.inner_attn_ln.weight": 1 + rand(WIDTH),
                   p + "attn.inner_attn_ln.bias": rand(WIDTH), p + "attn.proj.weight": rand(WIDTH, WIDTH),
                   p + "attn.proj.bias": rand(WIDTH), p + "attn.rope.freqs_cos": cos, p + "attn.rope.freqs_sin": sin,
                   p + "mlp.w1.weight": rand(HIDDEN, WIDTH), p + "mlp.w1.bias": rand(HIDDEN),
                   p + "mlp.w2.weight": rand(HIDDEN, WIDTH), p + "mlp.w2.bias": rand(HIDDEN),
                   p + "mlp.ffn_ln.weight": 1 + rand(HIDDEN), p + "mlp.ffn_ln.bias": rand(HIDDEN),
                   p + "mlp.w3.weight": rand(WIDTH, HIDDEN), p + "mlp.w3.bias": rand(WIDTH)})
    return sd


def _ln(x: torch.Tensor, sd: dict, key: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], EPS)


def _rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    pairs = t.reshape(*t.shape[:-1], -1, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(t.shape)
    return t * cos + rotated * sin


def reference_block(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    batch, length, _ = x.shape
    h = _ln(x, sd, p + "norm1")
    q = F.linear(h, sd[p + "attn.q_proj.weight"], sd[p + "attn.q_bias"])
    k = F.linear(h, sd[p + "attn.k_proj.weight"])
    v = F.linear(h, sd[p + "attn.v_proj.weight"], sd[p + "attn.v_bias"])
    q, k, v = (t.reshape(batch, length, HEADS, -1).permute(0, 2, 1, 3) for t in (q, k, v))
    cos, sin = sd[p + "attn.rope.freqs_cos"], sd[p + "attn.rope.freqs_sin"]
    q = torch.cat([q[:, :, :1], _rope(q[:, :, 1:], cos, sin)], dim=2)
    k = torch.cat([k[:, :, :1], _rope(k[:, :, 1:], cos, sin)], dim=2)
    attn = ((q * HEAD_DIM**-0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(batch, length, -1)
    x = x + F.linear(_ln(out, sd, p + "attn.inner_attn_ln"), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    h = _ln(x, sd, p + "norm2")
    hidden = F.silu(F.linear(h, sd[p + "mlp.w1.weight"], sd[p + "mlp.w1.bias"])) * F.linear(
        h, sd[p + "mlp.w2.weight"], sd[p + "mlp.w2.bias"])
    return x + F.linear(_ln(hidden, sd, p + "mlp.ffn_ln"), sd[p + "mlp.w3.weight"], sd[p + "mlp.w3.bias"])


def reference_image(sd: dict, pixels: torch.Tensor) -> torch.Tensor:
    x = F.conv2d(pixels, sd["visual.patch_embed.proj.weight"], sd["visual.patch_embed.proj.bias"], stride=PATCH)
    x = torch.cat([sd["visual.cls_token"].expand(len(pixels), 1, WIDTH), x.flatten(2).transpose(1, 2)], dim=1)
    x = x + sd["visual.pos_embed"]
    for i in range(LAYERS):
        x = reference_block(sd, f"visual.blocks.{i}.", x)
    return F.linear(_ln(x, sd, "visual.norm")[:, 0], sd["visual.head.weight"], sd["visual.head.bias"])


SPEC = EvaClipSpec(head_width=HEAD_DIM)


@pytest.fixture(scope="module")
def converted() -> tuple[dict, EvaClipModel]:
    sd = eva_state_dict()
    model, report = load_eva_clip_weights(sd, SPEC)
    assert report.unmapped == []
    assert len(report.dropped) == 2 + 2 * LAYERS  # the rotary tables, each checked against ours
    return sd, model


def test_config_read_from_the_tensors() -> None:
    config = eva_clip_config(eva_state_dict(), SPEC)
    vision = config.vision_config
    assert (vision.hidden_size, vision.num_attention_heads, vision.num_hidden_layers) == (WIDTH, HEADS, LAYERS)
    assert (vision.intermediate_size, vision.image_size, vision.patch_size) == (HIDDEN, PATCH * GRID, PATCH)
    assert vision.qkv_bias and config.projection_dim == EMBED and config.text_config["hidden_act"] == "gelu"


def test_converted_image_features_equal_the_reference(converted) -> None:
    sd, model = converted
    pixels = torch.randn(2, 3, PATCH * GRID, PATCH * GRID, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model.get_image_features(pixels), reference_image(sd, pixels), atol=1e-5, rtol=0)
    # Without the rotation the reference differs: the test can see a wrong rotary embedding.
    unrotated = dict(sd)
    for key in [k for k in sd if k.endswith("freqs_cos")]:
        unrotated[key] = torch.ones_like(sd[key])
        unrotated[key.replace("cos", "sin")] = torch.zeros_like(sd[key])
    assert (reference_image(unrotated, pixels) - reference_image(sd, pixels)).abs().max() > 1e-3


def test_converted_text_features_equal_open_clip_text_tower(converted) -> None:
    sd, model = converted
    tokens = token_batch()
    with torch.no_grad():
        got = model.get_text_features(tokens, (tokens > 0).long())
        torch.testing.assert_close(got, reference_text(sd, tokens, F.gelu, "text."), atol=1e-5, rtol=0)
        assert (got - reference_text(sd, tokens, quick_gelu, "text.")).abs().max() > 1e-4


def test_save_and_load_round_trip(converted, tmp_path) -> None:
    _, model = converted
    model.save_pretrained(tmp_path)
    loaded = EvaClipModel.from_pretrained(tmp_path)
    pixels = torch.randn(1, 3, PATCH * GRID, PATCH * GRID)
    tokens = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, pixels), model(tokens, pixels), atol=1e-6, rtol=1e-6)


def test_wrong_rotary_table_and_leftovers_are_errors() -> None:
    sd = eva_state_dict()
    sd["visual.rope.freqs_cos"] = sd["visual.rope.freqs_cos"].flip(0)
    with pytest.raises(ConversionError, match="visual.rope.freqs_cos"):
        load_eva_clip_weights(sd, SPEC)
    sd = eva_state_dict()
    sd["visual.blocks.0.gamma_1"] = torch.ones(WIDTH)  # layer scale: not the EVA02-CLIP layout
    del sd["visual.head.bias"]
    with pytest.raises(ConversionError) as error:
        load_eva_clip_weights(sd, SPEC)
    assert "visual.blocks.0.gamma_1" in str(error.value) and "visual_projection.bias" in str(error.value)
