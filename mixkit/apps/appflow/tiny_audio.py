"""Debug flavours of the audio apps' models: tiny random Whisper, VITS and MusicGen folders saved with
`save_pretrained` as the Hub's are, for tests and demos. Offline: tokenizers are trained (or written) here."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from mixkit.apps.appflow.tiny import TINY_WORDS

# Whisper's special tokens (openai/whisper-* tokenizer_config.json) that generation needs, English only.
WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                    "<|notimestamps|>")


def _byte_bpe(vocab_size: int = 300) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a byte-level BPE trained on the tiny words (GPT-2 style, as Whisper's)."""
    from mixkit.data.tokenizers import train_opt_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        train_opt_tokenizer(TINY_WORDS, scratch, vocab_size=vocab_size)
        model = json.loads((Path(scratch) / "tokenizer.json").read_text())["model"]
    return dict(model["vocab"]), [tuple(pair) for pair in model["merges"]]


def build_tiny_whisper(directory: str | Path, seed: int = 0) -> Any:
    """`WhisperForConditionalGeneration` (1+1 layers, d_model 16, 80 mel bins) with a `WhisperProcessor` whose
    tokenizer is a byte-level BPE plus Whisper's special tokens. Returns the model."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor
    from transformers import WhisperTokenizer

    vocab, merges = _byte_bpe()
    for token in WHISPER_SPECIALS:
        vocab.setdefault(token, len(vocab))
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(WHISPER_SPECIALS[1:])})
    end = vocab["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=64, pad_token_id=end, bos_token_id=end, eos_token_id=end,
        decoder_start_token_id=vocab["<|startoftranscript|>"], begin_suppress_tokens=None, suppress_tokens=None)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config.max_length = 24  # a random model rarely stops by itself
    model.save_pretrained(directory)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(
        directory)
    return model


def build_tiny_vits(directory: str | Path, seed: int = 0) -> Any:
    """`VitsModel` (MMS-TTS's architecture, 1 layer everywhere, 16 kHz) with a character `VitsTokenizer` (no
    phonemizer, as MMS-TTS's). Returns the model."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    characters = ["<pad>", "<unk>", " ", *"abcdefghijklmnopqrstuvwxyz'.,"]
    vocab_file = directory / "vocab.json"
    vocab_file.write_text(json.dumps({character: index for index, character in enumerate(characters)}))
    tokenizer = VitsTokenizer(vocab_file=str(vocab_file), phonemize=False, add_blank=True, normalize=True)
    config = VitsConfig(
        vocab_size=len(characters), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
        flow_size=16, spectrogram_bins=17, upsample_initial_channel=16, upsample_rates=[2, 2],
        upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1, duration_predictor_filter_channels=16, depth_separable_num_layers=1,
        pad_token_id=0)
    torch.manual_seed(seed)
    model = VitsModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def build_tiny_musicgen(directory: str | Path, seed: int = 0) -> Any:
    """`MusicgenForConditionalGeneration` (T5 text encoder, EnCodec at 4 kHz, 100 frames/s, 2 codebooks, 2-layer
    decoder) with a `MusicgenProcessor` (a T5 tokenizer trained here). Returns the model."""
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor, T5Config)

    from mixkit.data.tokenizers import train_t5_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = train_t5_tokenizer(TINY_WORDS, scratch, vocab_size=120)
    text = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    codec = EncodecConfig(sampling_rate=4000, hidden_size=8, num_filters=4, upsampling_ratios=[8, 5],
                          codebook_size=16, num_lstm_layers=1, target_bandwidths=[2.0], codebook_dim=8)
    decoder = MusicgenDecoderConfig(vocab_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                    ffn_dim=32, num_codebooks=2, pad_token_id=16, bos_token_id=16,
                                    max_position_embeddings=64)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict())
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    model.generation_config.update(do_sample=True, guidance_scale=3.0, max_new_tokens=8, decoder_start_token_id=16,
                                   pad_token_id=16, bos_token_id=16)
    model.save_pretrained(directory)
    MusicgenProcessor(feature_extractor=EncodecFeatureExtractor(sampling_rate=4000), tokenizer=tokenizer
                      ).save_pretrained(directory)
    return model
