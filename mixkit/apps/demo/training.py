"""What every demo training run shares: from-scratch initialisation and one `Blip2Trainer` run per stage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mixkit.apps.demo.config import DemoConfig
from mixkit.train.arguments import Blip2TrainingArguments
from mixkit.train.trainer import Blip2Trainer

INIT_STD = 0.02  # BERT's and BLIP-2's initializer_range


def init_weights_(model: nn.Module, skip: tuple[str, ...] = ("temp",)) -> nn.Module:
    """From-scratch initialisation as BERT/BLIP-2 do it (normal 0.02, zero biases, unit norms): PyTorch's
    defaults (unit-variance embeddings, zero query tokens) make the tiny models start far off or symmetric."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in skip:
                continue
            if name.endswith("bias"):
                parameter.zero_()
            elif parameter.ndim == 1:  # norm scales
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, INIT_STD)
    return model


def training_arguments(name: str, config: DemoConfig, output_dir: Path, **overrides: Any) -> Blip2TrainingArguments:
    """`max_steps` of the stage, warm-up 10%, cosine to lr/10, on the CPU, no checkpoints; `overrides` replace
    any of these (the CLIP demo's open_clip optimizer settings)."""
    lr = config.learning_rates[name]
    steps = config.steps[name]
    settings = dict(
        output_dir=str(output_dir / name), max_steps=steps, per_device_train_batch_size=config.batch_size,
        learning_rate=lr, eta_min=lr / 10, warmup_steps=max(1, steps // 10), weight_decay=0.05,
        logging_steps=max(1, steps // 40), save_strategy="no", report_to="none", seed=config.seed,
        data_seed=config.seed, dataloader_num_workers=0, use_cpu=True, disable_tqdm=True,
    )
    return Blip2TrainingArguments(**{**settings, **overrides})


def run_trainer(name: str, model: nn.Module, dataset: Dataset, collator: Callable, task: Any, batch_type: type,
                config: DemoConfig, output_dir: Path, **overrides: Any) -> list[dict[str, float]]:
    """One stage on `Blip2Trainer` with `task`; returns the logged losses. `overrides`: see `training_arguments`."""
    args = training_arguments(name, config, output_dir, **overrides)
    trainer = Blip2Trainer(model=model, args=args, train_dataset=dataset,
                           data_collator=collator, task=task, batch_type=batch_type, progress_name=f"  {name}")
    trainer.train()
    return [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
