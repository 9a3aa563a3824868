"""The CLIP demo's sizes and step counts (`ClipDemoConfig`) and the tiny `CLIPConfig` built from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import CLIPConfig, PreTrainedTokenizerBase

from mixkit.data.shapes import ShapesConfig

STAGE = "clip"  # the one training run, named as `run_trainer` and the report's loss curve name it


@dataclass
class ClipDemoConfig:
    """Sizes and step counts; the defaults fit the 3-minute budget on one CPU thread."""

    seed: int = 0
    num_train: int = 3000
    num_test: int = 600  # about a third have one shape: the images of the 24-way "shape" task
    image_size: int = 48  # 6x6 patches of 8 px: a 3x3 grid of 16-px cells
    hidden_size: int = 64
    vision_layers: int = 3
    text_layers: int = 2
    projection_dim: int = 64
    bpe_merges: int = 200
    max_text_length: int = 32  # CLIP BPE tokens with the specials: the longest 3-shape caption has 30
    batch_size: int = 128
    steps: dict[str, int] = field(default_factory=lambda: {STAGE: 600})
    learning_rates: dict[str, float] = field(default_factory=lambda: {STAGE: 2e-3})
    num_examples: int = 6
    threads: int = 1  # see DemoConfig.threads

    def __post_init__(self) -> None:
        if set(self.steps) != {STAGE} or set(self.learning_rates) != {STAGE}:
            raise ValueError(f"steps and learning_rates take exactly the key {STAGE!r}")
        if min(self.num_train, self.num_test, self.batch_size, self.num_examples, self.steps[STAGE]) < 1:
            raise ValueError(f"sizes and step counts must be >= 1: {self}")
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of the 8 px patches, got {self.image_size}")
        if self.num_examples > self.num_test:
            raise ValueError(f"num_examples ({self.num_examples}) > num_test ({self.num_test})")

    @classmethod
    def tiny(cls) -> ClipDemoConfig:
        """Seconds instead of minutes, for tests: same workflow, small numbers."""
        return cls(num_train=256, num_test=90, hidden_size=32, vision_layers=2, text_layers=1, projection_dim=32,
                   bpe_merges=120, batch_size=64, steps={STAGE: 60}, num_examples=2)


def shapes_config(config: ClipDemoConfig) -> ShapesConfig:
    return ShapesConfig(num_train=config.num_train, num_val=0, num_test=config.num_test,
                        image_size=config.image_size, seed=config.seed)


def clip_model_config(config: ClipDemoConfig, tokenizer: PreTrainedTokenizerBase) -> CLIPConfig:
    """A tiny CLIP (ViT with 8-px patches, causal text transformer) around the demo's tokenizer."""
    width = config.hidden_size
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    text = dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
                num_hidden_layers=config.text_layers, num_attention_heads=4,
                max_position_embeddings=config.max_text_length, **special)
    vision = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=config.vision_layers,
                  num_attention_heads=4, image_size=config.image_size, patch_size=8)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim)
