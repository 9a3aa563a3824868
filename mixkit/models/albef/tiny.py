"""Debug flavour: a tiny ALBEF config with the real structure (text layers, then fusion layers), for tests."""

from __future__ import annotations

from mixkit.models.albef.config import AlbefConfig


def tiny_albef_config(vocab_size: int = 120, image_size: int = 32, hidden_size: int = 32, layers: int = 4,
                      fusion_layer: int = 2, decoder_layers: int = 2, cls_token_id: int = 2, sep_token_id: int = 3,
                      pad_token_id: int = 0, embed_dim: int = 16) -> AlbefConfig:
    """BERT special ids as the tokenizer gives them; bos is [CLS], where ALBEF's answer decoder starts."""
    text = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 4,
                num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=64,
                bos_token_id=cls_token_id, sep_token_id=sep_token_id, pad_token_id=pad_token_id,
                eos_token_id=sep_token_id)
    vision = dict(hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_hidden_layers=2,
                  num_attention_heads=4, image_size=image_size, patch_size=8, layer_norm_eps=1e-6)
    return AlbefConfig(text_config=text, vision_config=vision, image_text_hidden_size=embed_dim,
                       fusion_layer=fusion_layer, decoder_layers=decoder_layers)
