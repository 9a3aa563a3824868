"""Debug flavours: tiny BLIP-2 configs with the real architecture, for tests, benchmarks and the demo."""

from __future__ import annotations

from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig, T5Config


def tiny_vision_config(image_size: int = 32, hidden_size: int = 32, layers: int = 2, heads: int = 4) -> Blip2VisionConfig:
    return Blip2VisionConfig(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=8,
        layer_norm_eps=1e-6,
    )


def tiny_qformer_config(
    vocab_size: int = 120, hidden_size: int = 32, layers: int = 2, heads: int = 4, text_input: bool = False
) -> Blip2QFormerConfig:
    return Blip2QFormerConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 4,
        cross_attention_frequency=2,
        max_position_embeddings=64,
        use_qformer_text_input=text_input,
    )


def tiny_opt_config(vocab_size: int = 100, hidden_size: int = 32, layers: int = 2, eos_token_id: int = 2) -> OPTConfig:
    return OPTConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        ffn_dim=hidden_size * 4,
        num_attention_heads=4,
        max_position_embeddings=128,
        word_embed_proj_dim=hidden_size,
        bos_token_id=2,
        eos_token_id=eos_token_id,
        pad_token_id=1,
        dropout=0.0,
    )


def tiny_t5_config(vocab_size: int = 100, d_model: int = 32, layers: int = 2) -> T5Config:
    # Flan-T5 style: gated GELU, untied lm_head; LAVIS runs the exact `gelu`, as the Hub configs do.
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=d_model * 2,
        num_layers=layers,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dense_act_fn="gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )


def tiny_blip2_config(
    language_model: str = "opt",
    vocab_size: int = 100,
    qformer_vocab_size: int = 120,
    num_query_tokens: int = 4,
    image_size: int = 32,
    stage1: bool = False,
) -> Blip2Config:
    """`language_model` in {"opt", "t5"}; `stage1` adds the Q-Former text blocks and embeddings."""
    text_config = tiny_opt_config(vocab_size) if language_model == "opt" else tiny_t5_config(vocab_size)
    if language_model == "t5":
        text_config.dense_act_fn = "gelu"
    return Blip2Config(
        vision_config=tiny_vision_config(image_size).to_dict(),
        qformer_config=tiny_qformer_config(qformer_vocab_size, text_input=stage1).to_dict(),
        text_config=text_config.to_dict(),
        num_query_tokens=num_query_tokens,
        image_text_hidden_size=16,
    )
