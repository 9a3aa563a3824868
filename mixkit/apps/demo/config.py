"""The demo's sizes and step counts (`DemoConfig`) and the configs derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import Blip2Config

from mixkit.data.shapes import ShapesConfig
from mixkit.models.blip2.tiny import tiny_qformer_config, tiny_t5_config, tiny_vision_config

STAGES = ("vision", "language", "stage1", "stage2")


@dataclass
class DemoConfig:
    """Sizes and step counts; the defaults fit the 5-minute budget on 2 CPU cores."""

    seed: int = 0
    num_train: int = 3000
    num_test: int = 200
    image_size: int = 48  # 3x3 grid of 16-px cells = 2x2 patches of 8 px each
    hidden_size: int = 64  # ViT, Q-Former and T5 widths
    vision_layers: int = 3
    qformer_layers: int = 2
    language_layers: int = 2
    num_query_tokens: int = 8
    vocab_size: int = 400
    batch_size: int = 64
    steps: dict[str, int] = field(
        default_factory=lambda: {"vision": 250, "language": 900, "stage1": 100, "stage2": 900})
    learning_rates: dict[str, float] = field(
        default_factory=lambda: {"vision": 2e-3, "language": 2e-3, "stage1": 1e-3, "stage2": 2e-3})
    num_beams: int = 3
    num_examples: int = 6
    # One thread: on 2 cores it was only ~10% slower than two when the machine was idle, and two threads
    # slowed 5-25x whenever another process was busy (OpenMP workers waiting on each other).
    threads: int = 1

    def __post_init__(self) -> None:
        if set(self.steps) != set(STAGES) or set(self.learning_rates) != set(STAGES):
            raise ValueError(f"steps and learning_rates need exactly the stages {STAGES}")
        if min(self.num_train, self.num_test, self.batch_size, self.num_examples, *self.steps.values()) < 1:
            raise ValueError(f"sizes and step counts must be >= 1: {self}")
        if self.num_examples > self.num_test:
            raise ValueError(f"num_examples ({self.num_examples}) > num_test ({self.num_test})")

    @classmethod
    def tiny(cls) -> DemoConfig:
        """Seconds instead of minutes, for tests: same pipeline, every number small."""
        return cls(num_train=48, num_test=8, hidden_size=32, vision_layers=1, qformer_layers=2,
                   language_layers=1, num_query_tokens=4, vocab_size=200, batch_size=8,
                   steps={stage: 3 for stage in STAGES}, num_beams=1, num_examples=2)


def shapes_config(config: DemoConfig) -> ShapesConfig:
    return ShapesConfig(num_train=config.num_train, num_val=0, num_test=config.num_test,
                        image_size=config.image_size, seed=config.seed)


def blip2_config(config: DemoConfig, vocab_size: int, qformer_vocab_size: int, stage1: bool) -> Blip2Config:
    """The tiny BLIP-2-FlanT5 of the demo; `stage1` adds the Q-Former's text blocks."""
    width = config.hidden_size
    return Blip2Config(
        vision_config=tiny_vision_config(config.image_size, width, config.vision_layers).to_dict(),
        qformer_config=tiny_qformer_config(qformer_vocab_size, width, config.qformer_layers,
                                           text_input=stage1).to_dict(),
        text_config=tiny_t5_config(vocab_size, width, config.language_layers).to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_text_hidden_size=32,
    )
