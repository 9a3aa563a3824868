"""Debug flavours of the generation apps' models: tiny random `diffusers` pipelines with the real architectures,
saved with `save_pretrained` as the Hub's folders are (so a folder is recognised by its model_index.json), for
tests and demos. Offline: the CLIP tokenizer is trained here on a few words. Component layouts follow `diffusers`'
own fast tests (huggingface/diffusers tests/pipelines/: stable_diffusion_2/test_stable_diffusion_upscale.py at
0a72904, text_to_video_synthesis/test_text_to_video.py at 09a7514, audioldm/test_audioldm.py at 0356e18), shrunk
further; each pipeline runs in a fraction of a second per step at 32 px on a CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from mixkit.apps.appflow.tiny import TINY_WORDS

# Stable Diffusion's scheduler settings with steps_offset=1 (as the Hub's SD configs; no deprecation warning).
_DDIM = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
             set_alpha_to_one=False, steps_offset=1)


def _clip_tokenizer() -> Any:
    from mixkit.data.tokenizers import train_clip_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        return train_clip_tokenizer(TINY_WORDS, Path(scratch) / "tokenizer")


def _clip_text_encoder(tokenizer: Any, hidden_size: int = 32, projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4,
                            num_hidden_layers=2, projection_dim=32, hidden_act="gelu")
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _unet(in_channels: int = 4, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=2, attention_head_dim=2, **extra)


def _vae(blocks: int = 2, channels: int = 3, scaling_factor: float = 0.18215) -> Any:
    from diffusers import AutoencoderKL

    widths = [4, 8, 8][:blocks]
    return AutoencoderKL(block_out_channels=widths, in_channels=channels, out_channels=channels, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks,
                         norm_num_groups=2, scaling_factor=scaling_factor)


def build_tiny_stable_diffusion(directory: str | Path, inpainting: bool = False, seed: int = 0) -> Any:
    """A Stable Diffusion folder (32 px images, 16 px latents): text-to-image (also loaded as img2img), or the
    inpainting variant whose UNet takes 9 channels (latents, mask, masked-image latents). Returns the pipeline."""
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    tokenizer = _clip_tokenizer()
    torch.manual_seed(seed)
    parts = dict(unet=_unet(9 if inpainting else 4), vae=_vae(), text_encoder=_clip_text_encoder(tokenizer),
                 tokenizer=tokenizer, scheduler=DDIMScheduler(**_DDIM), safety_checker=None, feature_extractor=None,
                 requires_safety_checker=False)
    pipeline = (StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline)(**parts)
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_stable_diffusion_xl(directory: str | Path, seed: int = 0) -> Any:
    """Stable Diffusion XL's layout: two CLIP text towers (the second with a projection feeding the pooled
    embedding), a UNet with "text_time" added conditioning (6 size/crop numbers x 8 + the 32-d pooled text) and
    64-d cross-attention (both towers' 32-d states side by side). Returns the pipeline (loads as text-to-image
    and as img2img)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = _clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
        norm_num_groups=2)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    pipeline = StableDiffusionXLPipeline(
        unet=unet, vae=_vae(), scheduler=scheduler, text_encoder=_clip_text_encoder(tokenizer),
        text_encoder_2=_clip_text_encoder(tokenizer, projection=True), tokenizer=tokenizer, tokenizer_2=tokenizer,
        force_zeros_for_empty_prompt=True)
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_upscaler(directory: str | Path, seed: int = 0) -> Any:
    """The x4 upscaler's layout: a 7-channel UNet (latents + the noised low-res image) with a noise-level class
    embedding, a 3-block VAE (x4), v-prediction. A 16 px image becomes 64 px. Returns the pipeline."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    tokenizer = _clip_tokenizer()
    torch.manual_seed(seed)
    pipeline = StableDiffusionUpscalePipeline(
        unet=_unet(7, num_class_embeds=400), vae=_vae(blocks=3, scaling_factor=0.08333),
        text_encoder=_clip_text_encoder(tokenizer),
        tokenizer=tokenizer, low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction", steps_offset=1), max_noise_level=350)
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_text_to_video(directory: str | Path, seed: int = 0) -> Any:
    """ModelScope text-to-video's layout (`UNet3DConditionModel`, 16 px latents for 32 px frames). Returns the
    pipeline."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    tokenizer = _clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=2)
    pipeline = TextToVideoSDPipeline(unet=unet, vae=_vae(), text_encoder=_clip_text_encoder(tokenizer, 8),
                                     tokenizer=tokenizer, scheduler=DDIMScheduler(**_DDIM))
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_versatile_diffusion(directory: str | Path, seed: int = 0) -> Any:
    """Versatile Diffusion's dual-guided layout: CLIP text and vision towers with 32-d projections feeding one
    image UNet. Returns the pipeline (saved before its attention is made dual, as the Hub's folder is)."""
    from diffusers import DDIMScheduler, VersatileDiffusionDualGuidedPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    tokenizer = _clip_tokenizer()
    torch.manual_seed(seed)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
        patch_size=8, projection_dim=32)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipeline = VersatileDiffusionDualGuidedPipeline(
        tokenizer=tokenizer, image_feature_extractor=processor, text_encoder=_clip_text_encoder(tokenizer,
                                                                                                 projection=True),
        image_encoder=vision, image_unet=_unet(), text_unet=None, vae=_vae(), scheduler=DDIMScheduler(**_DDIM))
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_audioldm(directory: str | Path, seed: int = 0) -> Any:
    """AudioLDM's layout (CLAP text tower, mel-spectrogram VAE, HiFi-GAN vocoder at 16 kHz), sizes from diffusers'
    fast test. Returns the pipeline."""
    from diffusers import AudioLDMPipeline, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    from mixkit.data.tokenizers import train_opt_tokenizer

    with tempfile.TemporaryDirectory() as scratch:  # byte-level BPE, as CLAP's RoBERTa tokenizer
        tokenizer = train_opt_tokenizer(TINY_WORDS, scratch, vocab_size=300)
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16), class_embed_type="simple_projection", projection_class_embeddings_input_dim=8,
        class_embeddings_concat=True, norm_num_groups=4, attention_head_dim=4)
    text = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=16, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=8)).eval()
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[2, 2],
        upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        normalize_before=False)).eval()
    pipeline = AudioLDMPipeline(unet=unet, vae=_vae(channels=1), text_encoder=text, tokenizer=tokenizer,
                                scheduler=DDIMScheduler(**_DDIM), vocoder=vocoder)
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_causal_lm(directory: str | Path, seed: int = 0) -> Any:
    """A tiny OPT causal LM (the LLM stages' debug flavour) over a word-level tokenizer of the tiny words, so
    whatever a random model generates decodes to words (text-to-speech and parsing can read it). Returns the
    model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

    words = sorted({word for line in TINY_WORDS for word in line.split()})
    vocab = {token: index for index, token in enumerate(["<pad>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation apart
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        bos_token="</s>", unk_token="<unk>")
    config = OPTConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                       num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=32,
                       bos_token_id=vocab["</s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"])
    torch.manual_seed(seed)
    model = OPTForCausalLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model
