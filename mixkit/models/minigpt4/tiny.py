"""Debug flavours: tiny MiniGPT-4 / MiniGPT-v2 configs with the real architecture, for tests and benchmarks."""

from __future__ import annotations

from transformers import LlamaConfig

from mixkit.models.blip2.tiny import tiny_qformer_config, tiny_vision_config
from mixkit.models.minigpt4.config import LoraSettings, MiniGPT4Config


def tiny_llama_config(vocab_size: int, hidden_size: int = 32, layers: int = 2, pad_token_id: int | None = None
                      ) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=pad_token_id,
                       tie_word_embeddings=False)


def tiny_minigpt4_config(variant: str, vocab_size: int, image_size: int = 32, pad_token_id: int | None = None
                         ) -> MiniGPT4Config:
    """`variant` in {"vicuna0", "llama2", "minigptv2"}: Q-Former with 4 queries, or 8 px patches grouped by 4
    (a 32 px image: 16 patches -> 4 LLM tokens); MiniGPT-v2 gets LoRA r 4 on q_proj / v_proj."""
    with_qformer = variant == "vicuna0"
    return MiniGPT4Config(
        vision_config=tiny_vision_config(image_size).to_dict(),
        text_config=tiny_llama_config(vocab_size, pad_token_id=pad_token_id).to_dict(),
        qformer_config=tiny_qformer_config().to_dict() if with_qformer else None,
        num_query_tokens=4 if with_qformer else 0,
        conversation_template=variant,
        lora=LoraSettings(r=4, alpha=8, dropout=0.0) if variant == "minigptv2" else None,
    )
