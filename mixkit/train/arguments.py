"""Typed training arguments: the article's names and defaults, on top of `transformers.TrainingArguments`.

Every field is a command-line option (`--per_device_train_batch_size 32`) and a key of a recipe file in
`configs/`. The defaults are the article's (PaddleMIX BLIP-2): batch 128, warm-up 2000 steps, learning rate
1e-4 with a cosine floor `eta_min` 1e-5, weight decay 0.05, 10 epochs, logging every 50 steps, a checkpoint
per epoch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from transformers import TrainingArguments



def default_report_to() -> str:
    """TensorBoard logs when it is installed (the `report_to` default mixkit passes to the Trainer)."""
    return "tensorboard" if importlib.util.find_spec("tensorboard") else "none"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={
        "help": "the starting checkpoint: catalogue name or folder (config.json + model.safetensors + tokenizer)"})
    load_model_path: str | None = field(default=None, metadata={
        "help": "a checkpoint folder whose weights are loaded on top (e.g. a stage-1 Q-Former to start stage 2); "
                "only keys the model has are taken, and every one taken is logged"})
    freeze_vit: bool = field(default=True, metadata={
        "help": "keep the ViT blocks frozen (BLIP-2 stages 1 and 2); caption fine-tuning unfreezes them"})
    language_model_dropout: bool = field(default=True, metadata={
        "help": "stage 2 / caption fine-tuning: keep the frozen language model's dropout active while training, as "
                "LAVIS does (its OPT / Flan-T5 stay in train mode); false keeps the frozen LM in eval mode, a "
                "deterministic LM. Evaluation and prediction never use dropout"})
    frozen_dtype: str = field(default="fp32", metadata={
        "help": "dtype of the frozen parts while training: the frozen ViT trunk and the frozen LLM. bf16 makes "
                "steps faster on GPUs and on CPUs with AMX-BF16 (measured in benchmarks/RESULTS.md) and changes "
                "losses by ~1e-4; the trained parts (Q-Former, queries, ln_vision, projection) stay fp32. Needs "
                "save_trainable_only (frozen weights are never written in bf16)", "choices": ["fp32", "bf16"]})
    save_trainable_only: bool = field(default=True, metadata={
        "help": "checkpoints hold only trainable weights and name model_name_or_path as their base"})
    # Momentum distillation (BLIP pretraining; LAVIS blip_pretrain_base.yaml / pretrain_14m.yaml defaults).
    queue_size: int = field(default=57600, metadata={
        "help": "blip-pretrain, albef-*: momentum features kept in each ITC queue (LAVIS BLIP 57600)"})
    momentum: float = field(default=0.995, metadata={
        "help": "blip-pretrain, albef-*: EMA factor of the momentum encoders (LAVIS 0.995)"})
    alpha: float = field(default=0.4, metadata={
        "help": "blip-pretrain, albef-*: weight of the momentum encoders' soft ITC targets, ramped up over the first 2 "
                "epochs (LAVIS 0.4)"})


@dataclass
class DataArguments:
    dataset_name: str = field(default="coco_caption", metadata={
        "help": "coco_caption, vg_caption, shapes, custom_caption (see mixkit.data.load_dataset)"})
    data_files: list[str] | None = field(default=None, metadata={
        "help": "annotation file(s) in the COCO-Karpathy format (default: the standard set's files)"})
    image_root: str | None = field(default=None, metadata={"help": "folder the records' image paths are under"})
    train_shards: str | None = field(default=None, metadata={
        "help": "train on tar shards instead of dataset_name/data_files: a folder or shards.json written by "
                "`mixkit data shards`, or a WebDataset brace pattern such as 'DIR/shard-{000000..000009}.tar' "
                "(counts from a shards.json beside the tars, else read once)"})
    image_size: int = field(default=224, metadata={"help": "training image size (224; 364 for caption fine-tuning)"})
    prompt: str = field(default="", metadata={
        "help": "text put before every training caption (caption fine-tuning: 'a photo of ')"})
    max_text_length: int = field(default=32, metadata={"help": "tokens per caption after truncation"})
    max_bad_image_fraction: float = field(default=0.01, metadata={
        "help": "stop when more than this fraction of the images read so far could not be decoded"})


@dataclass
class Blip2TrainingArguments(TrainingArguments):
    per_device_train_batch_size: int = field(default=128, metadata={"help": "batch size per device"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate after warm-up"})
    eta_min: float = field(default=1e-5, metadata={"help": "floor of the cosine schedule (learning rate at the end)"})
    lr_decay_rate: float = field(default=0.0, metadata={
        "help": "> 0: LAVIS's linear_warmup_step_lr instead of cosine: warm-up in the first epoch, then "
                "learning_rate * rate ** epoch, floored at eta_min (BLIP pretraining: 0.9)"})
    warmup_steps: float = field(default=2000, metadata={"help": "linear warm-up steps from 0 to learning_rate"})
    weight_decay: float = field(default=0.05, metadata={
        "help": "AdamW weight decay (never applied to biases, norms and other 1-D parameters)"})
    num_train_epochs: float = field(default=10, metadata={"help": "epochs"})
    logging_steps: float = field(default=50, metadata={"help": "log loss and learning rate every N steps"})
    save_strategy: str = field(default="epoch", metadata={"help": "when to checkpoint: epoch, steps or no"})
    tensor_parallel_degree: int = field(default=1, metadata={
        "help": "split the language model across this many GPUs (uses the model's transformers tp_plan)"})
    sharding_parallel_degree: int = field(default=1, metadata={
        "help": "> 1 (= the number of processes) shards parameters, gradients and optimizer state across the "
                "processes with torch's FSDP2 (fully_shard), on GPUs or on CPU (gloo)"})
    gpu_memory_gib: float | None = field(default=None, metadata={
        "help": "memory of one GPU in GiB: log whether DDP, FSDP and ZeRO-2 fit it, and stop before training when "
                "this run's layout does not (naming the layouts that would)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep every collated field (leave False)"})
