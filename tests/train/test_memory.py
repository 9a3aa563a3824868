"""The memory planner's arithmetic against hand computations, and `--gpu_memory_gib` stopping a run that does
not fit before it trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.train import memory
from mixkit.train.arguments import Blip2TrainingArguments

CONFIGS = Path(__file__).parents[2] / "configs"


class Toy(nn.Module):
    """4 frozen blocks of Linear(8, 8) (72 parameters, 288 bytes each) and a trainable Linear(8, 2) head
    (18 parameters, 72 bytes) that FSDP2 would leave in the root unit. All fp32."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
        self.head = nn.Linear(8, 2)
        self.blocks.requires_grad_(False)


def test_parameter_split_by_hand() -> None:
    split = memory.ParameterSplit.of(Toy())
    assert split == memory.ParameterSplit(trainable_bytes=72, frozen_bytes=4 * 288, trainable_count=18,
                                          root_bytes=72, root_trainable_bytes=72, largest_block_bytes=288,
                                          largest_block_trainable_bytes=0)


def test_layouts_by_hand() -> None:
    split = memory.ParameterSplit.of(Toy())
    ddp, fsdp, zero2 = memory.plan(split, activations=1000, processes=4)
    # DDP: all weights (72 + 1152), gradients of the trainable 72 bytes, AdamW's two moments (2 x 72).
    assert (ddp.layout, ddp.weights, ddp.gradients, ddp.optimizer) == ("DDP", 1224, 72, 144)
    # FSDP(4): a quarter of everything, plus the gathered root (72) and two blocks (2 x 288) in weights, and the
    # root's full gradients (72) until they are reduce-scattered.
    assert (fsdp.layout, fsdp.weights, fsdp.gradients, fsdp.optimizer) == ("FSDP(4)", 1224 / 4 + 72 + 576,
                                                                           72 / 4 + 72, 144 / 4)
    # ZeRO-2(4): whole weights; a quarter of the gradients; a quarter of the moments and of the fp32 copy (4 x 18).
    assert (zero2.layout, zero2.weights, zero2.gradients, zero2.optimizer) == ("ZeRO-2(4)", 1224, 72 / 4,
                                                                             (144 + 72) / 4)
    assert ddp.total == 1224 + 72 + 144 + 1000
    assert [e.layout for e in memory.plan(split, activations=0, processes=1)] == ["single process"]


def test_activation_formula_by_hand() -> None:
    # s=4, b=2, h=32, a=4, 4-byte values: 4*2*32 * (34 + 5*4*4/32) * 4/2 = 256 * 36.5 * 2
    assert memory.layer_activation_bytes(4, 2, 32, 4, value_bytes=4) == 18_688
    tower = memory.Tower(layers=2, hidden=32, heads=4, sequence=4, checkpointed=True)
    assert memory.tower_bytes(tower, batch=2, value_bytes=4) == 2 * (4 * 2 * 32 * 4) + 18_688  # inputs + 1 layer


def test_stage2_activations_by_hand() -> None:
    model = Blip2Model(tiny_blip2_config("opt", vocab_size=300, image_size=32))  # 2 layers, hidden 32, 4 heads
    model.lock_frozen_parts()
    shape = memory.BatchShape(batch=2, image_size=32, text_length=6, value_bytes=4)
    qformer = 2 * 18_688  # 4 queries: the values above
    llm = 2 * (10 * 2 * 32 * (34 + 5 * 4 * 10 / 32) * 2)  # 4 queries + 6 tokens, backward crosses the frozen LLM
    logits = 2 * 2 * 10 * 300 * 4  # fp32 logits and their gradient
    assert memory.activation_bytes(model, shape) == qformer + llm + logits  # the frozen ViT keeps nothing
    model.unlock_image_tower()  # caption fine-tuning: (32/8)^2 + 1 = 17 patch positions through 2 layers
    vit = 2 * (17 * 2 * 32 * (34 + 5 * 4 * 17 / 32) * 2)
    assert memory.activation_bytes(model, shape) == vit + qformer + llm + logits


def test_a_layout_that_does_not_fit_names_those_that_do() -> None:
    estimates = memory.plan(memory.ParameterSplit.of(Toy()), activations=0, processes=4)
    # totals: DDP 1440, FSDP(4) 954 + 90 + 36 = 1080, ZeRO-2(4) 1224 + 18 + 54 = 1296
    memory.check_fits(estimates, "FSDP(4)", gpu_bytes=1100)  # fits: no error
    with pytest.raises(memory.MemoryPlanError, match=r"DDP needs about 1\.41 KiB.*layouts that fit: FSDP\(4\) \("):
        memory.check_fits(estimates, "DDP", gpu_bytes=1100)
    with pytest.raises(memory.MemoryPlanError, match="no layout fits"):
        memory.check_fits(estimates, "ZeRO-2(4)", gpu_bytes=100)
    table = memory.memory_table(estimates, 1100, "DDP")
    assert "DDP *" in table and table.count("does not fit") == 2 and "total (KiB)" in table


def test_chosen_layout_follows_the_options() -> None:
    def args(**kwargs) -> Blip2TrainingArguments:
        return Blip2TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, **kwargs)

    assert memory.chosen_layout(args(), 1) == "single process"
    assert memory.chosen_layout(args(), 8) == "DDP"
    assert memory.chosen_layout(args(sharding_parallel_degree=8), 8) == "FSDP(8)"
    zero2 = json.loads((CONFIGS / "deepspeed_zero2.json").read_text())
    assert memory.chosen_layout(args(deepspeed=zero2), 8) == "ZeRO-2(8)"
    zero3 = {**zero2, "zero_optimization": {"stage": 3}}
    assert memory.chosen_layout(args(deepspeed=zero3), 8) is None  # not modelled: no verdict


def test_run_that_does_not_fit_stops_before_training(tmp_path, capsys, caplog) -> None:
    from mixkit.data.shapes import ShapesConfig, write_shapes_dataset
    from mixkit.testing import build_tiny_predictor
    from mixkit.train.train_cli import main

    build_tiny_predictor(tmp_path / "model", "opt")
    write_shapes_dataset(tmp_path / "shapes", ShapesConfig(num_train=1, num_val=1, num_test=1, image_size=32))
    caplog.set_level("INFO", logger="mixkit.train.memory")
    status = main(["blip2-stage2", "--model_name_or_path", str(tmp_path / "model"), "--dataset_name", "custom_caption",
                   "--data_files", str(tmp_path / "shapes/annotations/caption_train.json"),
                   "--image_root", str(tmp_path / "shapes"), "--image_size", "32", "--per_device_train_batch_size",
                   "2", "--output_dir", str(tmp_path / "out"), "--report_to", "none", "--gpu_memory_gib", "0.0001"])
    assert status == 2
    assert "single process needs about" in capsys.readouterr().err
    assert "single process *" in caplog.text and "does not fit" in caplog.text
    assert not list((tmp_path / "out").glob("checkpoint-*")) and not (tmp_path / "out" / "model.safetensors").exists()
