"""open_clip ViT weights -> transformers CLIPModel: the converted model computes what open_clip's forward does.

The state dict is built here in open_clip's published layout (key names and shapes from open_clip's
`model.py` / `transformer.py`, release 3.3.0) and run through an independent reference forward written below
in plain torch, as open_clip computes it (`nn.MultiheadAttention` semantics, `x @ proj`, EOT = argmax pooling).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixkit.models.clip.convert_open_clip import OpenClipSpec, load_open_clip_weights, open_clip_config
from mixkit.models.clip.keymap import ConversionError

WIDTH, HEADS, LAYERS, EMBED, PATCH, GRID, VOCAB, CONTEXT = 32, 2, 2, 24, 8, 3, 60, 12


def _block(prefix: str, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.2

    return {
        f"{prefix}ln_1.weight": 1 + rand(width), f"{prefix}ln_1.bias": rand(width),
        f"{prefix}attn.in_proj_weight": rand(3 * width, width), f"{prefix}attn.in_proj_bias": rand(3 * width),
        f"{prefix}attn.out_proj.weight": rand(width, width), f"{prefix}attn.out_proj.bias": rand(width),
        f"{prefix}ln_2.weight": 1 + rand(width), f"{prefix}ln_2.bias": rand(width),
        f"{prefix}mlp.c_fc.weight": rand(4 * width, width), f"{prefix}mlp.c_fc.bias": rand(4 * width),
        f"{prefix}mlp.c_proj.weight": rand(width, 4 * width), f"{prefix}mlp.c_proj.bias": rand(width),
    }


def text_tower(generator: torch.Generator, prefix: str = "") -> dict[str, torch.Tensor]:
    """open_clip's TextTransformer keys (top level in CLIP, under "text." in CustomTextCLIP / EVA-CLIP)."""
    sd = {f"{prefix}token_embedding.weight": torch.randn(VOCAB, WIDTH, generator=generator) * 0.5,
          f"{prefix}positional_embedding": torch.randn(CONTEXT, WIDTH, generator=generator) * 0.2}
    for i in range(LAYERS):
        sd.update(_block(f"{prefix}transformer.resblocks.{i}.", WIDTH, generator))
    sd[f"{prefix}ln_final.weight"] = 1 + torch.randn(WIDTH, generator=generator) * 0.2
    sd[f"{prefix}ln_final.bias"] = torch.randn(WIDTH, generator=generator) * 0.2
    sd[f"{prefix}text_projection"] = torch.randn(WIDTH, EMBED, generator=generator) * 0.3
    sd["logit_scale"] = torch.tensor(2.5)
    return sd


def open_clip_state_dict(seed: int = 0, text_prefix: str = "") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = text_tower(g, text_prefix)
    sd.update({
        "visual.conv1.weight": torch.randn(WIDTH, 3, PATCH, PATCH, generator=g) * 0.1,
        "visual.class_embedding": torch.randn(WIDTH, generator=g) * 0.3,
        "visual.positional_embedding": torch.randn(GRID * GRID + 1, WIDTH, generator=g) * 0.3,
        "visual.ln_pre.weight": 1 + torch.randn(WIDTH, generator=g) * 0.2,
        "visual.ln_pre.bias": torch.randn(WIDTH, generator=g) * 0.2,
        "visual.ln_post.weight": 1 + torch.randn(WIDTH, generator=g) * 0.2,
        "visual.ln_post.bias": torch.randn(WIDTH, generator=g) * 0.2,
        "visual.proj": torch.randn(WIDTH, EMBED, generator=g) * 0.3,
    })
    for i in range(LAYERS):
        sd.update(_block(f"visual.transformer.resblocks.{i}.", WIDTH, g))
    return sd


# ---------------------------------------------------------------- the reference: open_clip's forward


def reference_block(sd: dict, prefix: str, x: torch.Tensor, act, mask: torch.Tensor | None) -> torch.Tensor:
    """ResidualAttentionBlock on [length, batch, width] (nn.MultiheadAttention's layout)."""
    h = F.layer_norm(x, (WIDTH,), sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"])
    attended, _ = F.multi_head_attention_forward(
        h, h, h, WIDTH, HEADS, sd[prefix + "attn.in_proj_weight"], sd[prefix + "attn.in_proj_bias"], None, None,
        False, 0.0, sd[prefix + "attn.out_proj.weight"], sd[prefix + "attn.out_proj.bias"], training=False,
        need_weights=False, attn_mask=mask)
    x = x + attended
    h = F.layer_norm(x, (WIDTH,), sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"])
    h = F.linear(act(F.linear(h, sd[prefix + "mlp.c_fc.weight"], sd[prefix + "mlp.c_fc.bias"])),
                 sd[prefix + "mlp.c_proj.weight"], sd[prefix + "mlp.c_proj.bias"])
    return x + h


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def reference_text(sd: dict, tokens: torch.Tensor, act, prefix: str = "") -> torch.Tensor:
    x = sd[prefix + "token_embedding.weight"][tokens] + sd[prefix + "positional_embedding"][: tokens.shape[1]]
    length = tokens.shape[1]
    mask = torch.full((length, length), float("-inf")).triu(1)
    x = x.transpose(0, 1)
    for i in range(LAYERS):
        x = reference_block(sd, f"{prefix}transformer.resblocks.{i}.", x, act, mask)
    x = F.layer_norm(x.transpose(0, 1), (WIDTH,), sd[prefix + "ln_final.weight"], sd[prefix + "ln_final.bias"])
    return x[torch.arange(len(tokens)), tokens.argmax(-1)] @ sd[prefix + "text_projection"]


def reference_image(sd: dict, pixels: torch.Tensor, act) -> torch.Tensor:
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(len(pixels), 1, WIDTH)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (WIDTH,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"]).transpose(0, 1)
    for i in range(LAYERS):
        x = reference_block(sd, f"visual.transformer.resblocks.{i}.", x, act, None)
    x = F.layer_norm(x[0], (WIDTH,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    return x @ sd["visual.proj"]


def token_batch(seed: int = 1) -> torch.Tensor:
    """Two sequences: BOS, words, EOT (the highest id), then zero padding, as open_clip's tokenizer pads."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(2, CONTEXT, dtype=torch.long)
    for row, length in enumerate((5, 9)):
        tokens[row, 0] = VOCAB - 2
        tokens[row, 1 : length - 1] = torch.randint(1, VOCAB - 2, (length - 2,), generator=g)
        tokens[row, length - 1] = VOCAB - 1
    return tokens


@pytest.mark.parametrize("quick, text_prefix", [(True, ""), (False, ""), (False, "text.")])
def test_converted_clip_model_equals_open_clip_forward(quick: bool, text_prefix: str) -> None:
    sd = open_clip_state_dict(text_prefix=text_prefix)
    model, report = load_open_clip_weights(sd, OpenClipSpec(quick_gelu=quick, head_width=WIDTH // HEADS))
    assert report.unmapped == [] and report.dropped == {}
    act = quick_gelu if quick else F.gelu
    tokens = token_batch()
    pixels = torch.randn(3, 3, PATCH * GRID, PATCH * GRID, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        text = model.get_text_features(input_ids=tokens, attention_mask=(tokens > 0).long()).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
        expected_text = reference_text(sd, tokens, act, text_prefix)
        expected_image = reference_image(sd, pixels, act)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(image, expected_image, atol=1e-5, rtol=0)
    assert model.logit_scale.item() == 2.5
    # The other activation gives other features: the comparison can tell them apart.
    other = F.gelu if quick else quick_gelu
    assert (reference_image(sd, pixels, other) - expected_image).abs().max() > 1e-3


def test_config_is_read_from_the_tensors() -> None:
    config = open_clip_config(open_clip_state_dict(), OpenClipSpec(quick_gelu=True, head_width=16))
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.patch_size, vision.image_size, vision.num_hidden_layers) == (32, 8, 24, 2)
    assert (vision.num_attention_heads, vision.intermediate_size, vision.hidden_act) == (2, 128, "quick_gelu")
    assert (text.vocab_size, text.max_position_embeddings, text.num_attention_heads) == (VOCAB, CONTEXT, 2)
    assert (text.eos_token_id, config.projection_dim) == (VOCAB - 1, EMBED)


def test_leftover_and_missing_keys_are_listed() -> None:
    sd = open_clip_state_dict()
    sd["visual.extra_gain"] = torch.ones(3)
    del sd["visual.ln_post.bias"]
    with pytest.raises(ConversionError) as error:
        load_open_clip_weights(sd, OpenClipSpec(head_width=16))
    message = str(error.value)
    assert "visual.extra_gain" in message and "vision_model.post_layernorm.bias" in message


def test_non_vit_and_bad_head_width_are_refused() -> None:
    sd = open_clip_state_dict()
    with pytest.raises(ConversionError, match="head_width"):
        load_open_clip_weights(sd, OpenClipSpec(head_width=24))
    del sd["visual.proj"]
    with pytest.raises(ConversionError, match="visual.proj"):
        load_open_clip_weights(sd, OpenClipSpec(head_width=16))
