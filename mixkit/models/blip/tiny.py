"""Debug flavour: a tiny BLIP config with the real architecture (ViT + BERT with cross-attention), for tests."""

from __future__ import annotations

from transformers import BlipConfig


def tiny_blip_config(vocab_size: int = 120, image_size: int = 32, hidden_size: int = 32, layers: int = 2,
                     bos_token_id: int = 118, sep_token_id: int = 3, pad_token_id: int = 0,
                     embed_dim: int = 16) -> BlipConfig:
    """BERT special ids as a tokenizer trained here gives them ([DEC] = bos, [SEP] stops generation)."""
    text = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 4,
                num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=64,
                bos_token_id=bos_token_id, sep_token_id=sep_token_id, pad_token_id=pad_token_id,
                eos_token_id=sep_token_id)
    vision = dict(hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_hidden_layers=layers,
                  num_attention_heads=4, image_size=image_size, patch_size=8, layer_norm_eps=1e-6)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=embed_dim)
