"""Data-parallel training on CPU (gloo): 2 processes (or 2 nodes of 1) at batch B == 1 process at batch 2B; ITC
across ranks; stage 1 under DDP == under FSDP2."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.launch import free_port, run_together, two_nodes

# The model stack is imported inside the functions that need it: spawned workers re-import this module.

SMOOTHING = 0.1  # Stage1Task's default ITC label smoothing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- stage 2: 1 process == 2 processes


@pytest.fixture(scope="module")
def stage2_setup(tmp_path_factory) -> tuple[Path, Path]:
    from mixkit.testing import build_tiny_training_setup, update_config

    # Random crops and flips stay on: they are seeded per sample, so a sample gets the same pixels in either layout.
    shapes, model = tmp_path_factory.mktemp("shapes"), tmp_path_factory.mktemp("tiny-opt")
    build_tiny_training_setup(shapes, model)
    # The tiny LM already has dropout 0; the Q-Former's hidden and attention dropout (0.1) would draw different
    # masks in each process, so it is switched off: what is compared is the arithmetic, not the RNG streams.
    update_config(model, "qformer_config", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return model, shapes


def stage2_args(model: Path, shapes: Path, output: Path, batch: int) -> list[str]:
    # 20 captions (5 per image), global batch 4: 5 full steps per epoch on either layout (no short last batch).
    return ["--model_name_or_path", str(model), "--dataset_name", "custom_caption",
            "--data_files", str(shapes / "annotations/caption_train.json"), "--image_root", str(shapes),
            "--image_size", "32", "--output_dir", str(output), "--per_device_train_batch_size", str(batch),
            "--num_train_epochs", "2", "--warmup_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3",
            "--save_strategy", "steps", "--save_steps", "10", "--report_to", "none", "--disable_tqdm", "true",
            "--seed", "0", "--use_cpu", "true"]  # without it, torchrun on CPU gets no process group: see Blip2Trainer


def logged_losses(output: Path) -> list[float]:
    state = json.loads((output / "checkpoint-10" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def one_process(stage2_setup, tmp_path_factory) -> Path:
    """The reference: 1 process at batch 4."""
    from mixkit.train.train_cli import main

    output = tmp_path_factory.mktemp("one")
    assert main(["blip2-stage2", *stage2_args(*stage2_setup, output, batch=4)]) == 0
    return output


def assert_same_training(one: Path, two: Path) -> None:
    """Same logged losses and final weights as the 1-process run."""
    losses_one, losses_two = logged_losses(one), logged_losses(two)
    assert len(losses_one) == len(losses_two) == 10
    # Captions differ in length, so each process's own token mean differs from the global one: without the
    # global token count (`num_items_in_batch`) the losses would disagree at the 1e-2 level, not 1e-5.
    assert losses_one == pytest.approx(losses_two, rel=1e-5)
    weights_one = load_file(str(one / "model.safetensors"))
    weights_two = load_file(str(two / "model.safetensors"))
    assert weights_one.keys() == weights_two.keys() and "query_tokens" in weights_one
    for name, value in weights_one.items():
        # Attention key biases get a gradient that is 0 up to rounding (softmax ignores a shift common to a row
        # of scores), and AdamW turns that rounding noise into real steps: they agree to ~2e-6, not 1e-6.
        atol = 1e-5 if name.endswith("key.bias") else 1e-6
        torch.testing.assert_close(weights_two[name], value, rtol=1e-5, atol=atol, msg=name)


def test_two_processes_at_batch_b_match_one_process_at_batch_2b(stage2_setup, one_process, tmp_path) -> None:
    model, shapes = stage2_setup
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mixkit.train.train_cli", "blip2-stage2", *stage2_args(model, shapes, tmp_path / "two", batch=2)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(one_process, tmp_path / "two")


def test_two_nodes_on_loopback_match_one_process(stage2_setup, one_process, tmp_path) -> None:
    """Two `torchrun` launchers, one process each, meeting through a c10d rendezvous as two machines would."""
    args = ["mixkit.train.train_cli", "blip2-stage2", *stage2_args(*stage2_setup, tmp_path / "nodes", batch=2)]
    results = run_together(two_nodes(free_port(), *args), timeout=240)
    for status, _, stderr in results:
        assert status == 0, stderr[-3000:]
    assert any("DDP over 2 processes on 2 nodes" in stderr for _, _, stderr in results)  # the summary, rank 0
    assert_same_training(one_process, tmp_path / "nodes")


# ---------------------------------------------------------------- stage 1: ITC negatives from the other rank


def _inputs(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 samples (2 per rank): the same on every process."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(4, 3, 32, 32, generator=generator)
    ids = torch.randint(5, vocab_size, (4, 6), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # some padding
    mask[3, 5:] = 0
    return pixels, ids, mask


def hand_itc(model, own: slice, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
             full_gradient: bool = False) -> torch.Tensor:
    """This rank's ITC with the 4-sample problem written out in one process. As LAVIS: the image-to-text rows
    (own images) score constant text features of both ranks, the text-to-image rows (own texts) constant image
    features; `full_gradient` lets every feature carry gradient instead (what LAVIS does *not* do)."""
    image = model.encode_image_features(pixels).image_feats  # [4, queries, dim], both ranks' samples
    text = model.text_features(ids, mask)  # [4, dim]
    image_columns = image if full_gradient else image.detach()
    text_columns = text if full_gradient else text.detach()
    sim_i2t = model.best_query_cosine(image[own], text_columns) / model.temp  # [2, 4]
    sim_t2i = model.best_query_cosine(image_columns, text[own]).t() / model.temp  # [2, 4]
    targets = torch.arange(4)[own]

    def smoothed_ce(logits: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)
        picked = log_p.gather(1, targets[:, None]).squeeze(1)
        return (-(1 - SMOOTHING) * picked - SMOOTHING * log_p.mean(dim=1)).mean()

    return (smoothed_ce(sim_i2t) + smoothed_ce(sim_t2i)) / 2


def _itc_worker(rank: int, port: int, folder: str, out: str) -> None:
    from mixkit.models.blip2.stage1 import Blip2Stage1Model
    from mixkit.train.stage1_task import Stage1Batch, Stage1Task, gather_without_grad

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = Blip2Stage1Model.from_pretrained(folder).eval()  # eval: no dropout, features are deterministic
    pixels, ids, mask = _inputs(model.config.qformer_config.vocab_size)
    own = slice(2 * rank, 2 * rank + 2)
    batch = Stage1Batch(pixels[own], ids[own], mask[own])

    with torch.no_grad():  # the shapes the task works with: local rows x global columns
        image_feats = model.encode_image_features(batch.pixel_values).image_feats
        text_feats = model.text_features(batch.input_ids, batch.attention_mask)
        sim_i2t = model.similarity(image_feats, gather_without_grad(text_feats))
        sim_t2i = model.similarity(gather_without_grad(image_feats), text_feats).t()

    model.zero_grad()
    losses = Stage1Task(bos_token_id=1, pad_token_id=0).compute(model, batch, torch.Generator().manual_seed(rank))
    losses.loss.backward()
    task_grad = model.text_projection.weight.grad.clone()  # only ITC reaches text_projection

    model.zero_grad()
    hand = hand_itc(model, own, pixels, ids, mask)
    hand.backward()
    hand_grad = model.text_projection.weight.grad.clone()
    model.zero_grad()
    hand_itc(model, own, pixels, ids, mask, full_gradient=True).backward()
    full_grad = model.text_projection.weight.grad.clone()
    torch.save({"sim_i2t": tuple(sim_i2t.shape), "sim_t2i": tuple(sim_t2i.shape), "itc": losses.itc,
                "hand_itc": hand.detach(), "task_grad": task_grad, "hand_grad": hand_grad, "full_grad": full_grad},
               Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()
    # Skip C++ static destructors at exit: a gloo / autograd thread still joinable there can abort a worker whose
    # work is done ("terminate called without an active exception"; seen in tests/train/test_clip_contrastive.py).
    os._exit(0)


def test_itc_uses_the_other_ranks_samples_as_negatives(tmp_path) -> None:
    from mixkit.testing import build_tiny_stage1

    build_tiny_stage1(tmp_path / "model")
    mp.spawn(_itc_worker, args=(_free_port(), str(tmp_path / "model"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["sim_i2t"] == result["sim_t2i"] == (2, 4)
        torch.testing.assert_close(result["itc"], result["hand_itc"], rtol=1e-5, atol=1e-6)
        # text_projection's gradient comes from this rank's own text-to-image rows only ...
        torch.testing.assert_close(result["task_grad"], result["hand_grad"], rtol=1e-4, atol=1e-7)
        # ... and that is a real restriction: letting the other columns carry gradient changes it.
        assert not torch.allclose(result["task_grad"], result["full_grad"], rtol=1e-2, atol=1e-6)


def test_stage1_trains_under_torchrun_with_two_processes_ddp_and_fsdp2_alike(stage2_setup, tmp_path) -> None:
    """Stage 1 calls several model methods per batch: all must run inside the DDP-wrapped forward. Under FSDP2
    each Q-Former layer runs 3 times per batch and the 0-d temperature stays outside FSDP (averaged by the
    Trainer): the same losses and weights as DDP."""
    from mixkit.testing import build_tiny_stage1

    _, shapes = stage2_setup
    records = json.loads((shapes / "annotations/caption_train.json").read_text())
    build_tiny_stage1(tmp_path / "stage1", [r["caption"] for r in records])
    for layout, extra in (("ddp", []), ("fsdp", ["--sharding_parallel_degree", "2"])):
        args = stage2_args(tmp_path / "stage1", shapes, tmp_path / layout, batch=2) + extra
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "mixkit.train.train_cli", "blip2-stage1", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "checkpoint-10" / "trainer_state.json").read_text())
    losses = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 10 and all(math.isfinite(entry["loss"]) for entry in losses)
    assert all(entry["itc"] > 0 and entry["itm"] > 0 and entry["itg"] > 0 for entry in losses[:1])
    # Measured: losses within 2e-6, weights within 9e-6 (the random initial gradients are large, ~1e6, so the
    # clip factor's last bits differ between the two reduction orders).
    assert logged_losses(tmp_path / "fsdp") == pytest.approx(logged_losses(tmp_path / "ddp"), rel=1e-5, abs=1e-5)
    ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    fsdp = load_file(str(tmp_path / "fsdp" / "model.safetensors"))
    assert ddp.keys() == fsdp.keys() and "temp" in ddp
    assert max((ddp[name] - fsdp[name]).abs().max().item() for name in ddp) <= 1e-5
