"""mixkit: a PyTorch toolkit for multimodal large models (BLIP-2 and the BLIP family)."""

__version__ = "0.1.0"
