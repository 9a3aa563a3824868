"""Debug flavours of the AppFlow models: tiny random checkpoints with the real architectures, saved as the Hub's
folders are (`save_pretrained` of the `transformers` model and processor), for tests and demos. Offline: the
tokenizers are trained here on a few words (`mixkit.data.tokenizers`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

# Words the tiny tokenizers know: the shapes data's vocabulary plus a few everyday nouns.
TINY_WORDS: tuple[str, ...] = (
    "a small large red green blue yellow circle square triangle on the left right top",
    "a dog and a cat sit on a table next to a car . , photo of",
)


def build_tiny_grounding_dino(directory: str | Path, seed: int = 0, texts: Sequence[str] = TINY_WORDS) -> Any:
    """`GroundingDinoForObjectDetection` (Swin backbone without timm, BERT text encoder, 2 decoder layers) with a
    `GroundingDinoProcessor`; images are resized to 128-160 px (the model needs >= 128). Returns the model."""
    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessorPil, GroundingDinoProcessor, SwinConfig)

    from mixkit.data.tokenizers import train_bert_tokenizer

    directory = Path(directory)
    tokenizer = train_bert_tokenizer(texts, directory, vocab_size=200)
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=128,
                          out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32)
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        num_queries=20, num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 160})
    model.save_pretrained(directory)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return model


def build_tiny_sam(directory: str | Path, seed: int = 0) -> Any:
    """`SamModel` (ViT on 64 px, 8 px patches) with a `SamProcessor` resizing the longest edge to 64."""
    from transformers import (SamConfig, SamImageProcessorPil, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig)

    vision = SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                             image_size=64, patch_size=8, mlp_dim=64, global_attn_indexes=[1], window_size=4,
                             num_pos_feats=8)
    prompt_encoder = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    mask_decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                        iou_head_hidden_dim=16)
    torch.manual_seed(seed)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt_encoder,
                               mask_decoder_config=mask_decoder)).eval()
    image_processor = SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    model.save_pretrained(directory)
    SamProcessor(image_processor=image_processor).save_pretrained(directory)
    return model


QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                        "<|image_pad|>", "<|video_pad|>")
# A chat template written for the tiny folder in Qwen2-VL's ChatML layout: "<|im_start|>ROLE\n...<|im_end|>\n",
# an image as "<|vision_start|><|image_pad|><|vision_end|>" (the Hub checkpoints ship their own template).
TINY_QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_qwen2_tokenizer(texts: Sequence[str], directory: str | Path, vocab_size: int = 330) -> Any:
    """Byte-level BPE with Qwen2-VL's special tokens (ids 0-6), saved as a `Qwen2Tokenizer` with the template."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN2_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(list(texts), trainer=trainer)
    learned = json.loads(backend.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=learned["vocab"], merges=[tuple(pair) for pair in learned["merges"]],
                               unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN2_SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = TINY_QWEN2_VL_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_tiny_qwen2_vl(directory: str | Path, seed: int = 0, texts: Sequence[str] = TINY_WORDS) -> Any:
    """`Qwen2VLForConditionalGeneration` (1 vision block, 2 text layers, M-RoPE sections [2, 1, 1]) with its
    tokenizer, template and a `Qwen2VLImageProcessorPil` (14 px patches, 56-112 px images). Returns the model."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    directory = Path(directory)
    tokenizer = train_qwen2_tokenizer([*texts, "user assistant system describe the image"], directory)
    ids = tokenizer.convert_tokens_to_ids
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}, bos_token_id=None,
                eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
    vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                           video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                           vision_end_token_id=ids("<|vision_end|>"))
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2,
                             temporal_patch_size=2).save_pretrained(directory)
    return model
