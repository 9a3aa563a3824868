"""Debug flavours: tiny InstructBLIP configs with the real architecture (OPT, Llama/Vicuna or Flan-T5 LLM)."""

from __future__ import annotations

from transformers import InstructBlipConfig, InstructBlipQFormerConfig, LlamaConfig

from mixkit.models.blip2.tiny import tiny_opt_config, tiny_qformer_config, tiny_t5_config, tiny_vision_config

LANGUAGE_MODELS = ("opt", "llama", "t5")


def tiny_llama_config(vocab_size: int = 100, hidden_size: int = 32, layers: int = 2) -> LlamaConfig:
    # Vicuna's layout; bos/eos/pad as LAVIS's Vicuna tokenizer sets them (bos = eos = "</s>", pad "[PAD]").
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=128, bos_token_id=2, eos_token_id=2, pad_token_id=0,
                       tie_word_embeddings=False)


def tiny_instructblip_qformer_config(vocab_size: int = 120) -> InstructBlipQFormerConfig:
    blip2 = tiny_qformer_config(vocab_size).to_dict()
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "cross_attention_frequency", "max_position_embeddings")
    return InstructBlipQFormerConfig(**{name: blip2[name] for name in fields}, pad_token_id=0)


def tiny_instructblip_config(language_model: str = "opt", vocab_size: int = 100, qformer_vocab_size: int = 120,
                             num_query_tokens: int = 4, image_size: int = 32,
                             image_token_index: int | None = None) -> InstructBlipConfig:
    """`language_model` in LANGUAGE_MODELS; `image_token_index` is the `<image>` id `transformers` needs
    (default: the last id of the LLM vocabulary)."""
    if language_model not in LANGUAGE_MODELS:
        raise ValueError(f"language_model must be one of {LANGUAGE_MODELS}, got {language_model!r}")
    text_config = {"opt": tiny_opt_config, "llama": tiny_llama_config, "t5": tiny_t5_config}[language_model](vocab_size)
    return InstructBlipConfig(
        vision_config=tiny_vision_config(image_size).to_dict(),
        qformer_config=tiny_instructblip_qformer_config(qformer_vocab_size).to_dict(),
        text_config=text_config.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=vocab_size - 1 if image_token_index is None else image_token_index,
    )
