"""CLIP's contrastive loss: equal to `transformers`' own CLIP loss in one process, and on 2 processes (gloo, features
gathered with gradient, open_clip's `local_loss`) equal to 1 process at double batch, gradients included."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mixkit.train.contrastive import contrastive_loss

# The model stack is imported inside the tests that need it: spawned workers re-import this module.

BATCH = 4  # per process; the 1-process reference runs 2 * BATCH


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TwoTowers(nn.Module):
    """Stand-in encoders with parameters (so gradients can be compared) and a learnable logit scale."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.image = nn.Parameter(torch.randn(12, 8, generator=generator) * 0.5)
        self.text = nn.Parameter(torch.randn(10, 8, generator=generator) * 0.5)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, images: torch.Tensor, texts: torch.Tensor, detach_gather: bool = False) -> torch.Tensor:
        image_feats = F.normalize(images @ self.image, dim=-1)
        text_feats = F.normalize(texts @ self.text, dim=-1)
        loss = _detached_gather_loss if detach_gather else contrastive_loss
        return loss(image_feats, text_feats, self.logit_scale.exp())


def _detached_gather_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The control: the same loss with the other process's features gathered without gradient (LAVIS's ITC)."""
    rank, world = dist.get_rank(), dist.get_world_size()

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.detach().contiguous())
        parts[rank] = tensor  # the own part keeps its gradient
        return torch.cat(parts)

    targets = torch.arange(len(image_feats)) + rank * len(image_feats)
    return (F.cross_entropy(scale * image_feats @ gather(text_feats).T, targets)
            + F.cross_entropy(scale * text_feats @ gather(image_feats).T, targets)) / 2


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2 * BATCH, 12, generator=generator), torch.randn(2 * BATCH, 10, generator=generator)


def _loss_and_gradients(model: TwoTowers, images: torch.Tensor, texts: torch.Tensor,
                        detach_gather: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(images, texts, detach_gather)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        images, texts = _inputs()
        own = slice(rank * BATCH, (rank + 1) * BATCH)
        results = {}
        for name, detach in (("with_grad", False), ("detached", True)):
            loss, grads = _loss_and_gradients(TwoTowers(), images[own], texts[own], detach)
            # What DDP does: average the loss for the log and every parameter gradient over processes.
            for value in [loss, *grads.values()]:
                dist.all_reduce(value)
                value /= 2
            results[name] = (loss, grads)
        if rank == 0:
            torch.save(results, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without running C++ static destructors: about one run in ten, a gloo / autograd thread still joinable at
    # interpreter exit aborted the worker ("terminate called without an active exception") after its work was done.
    os._exit(0)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("contrastive") / "two.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_two_processes_at_batch_b_equal_one_process_at_batch_2b(two_process_results: dict) -> None:
    loss_one, grads_one = _loss_and_gradients(TwoTowers(), *_inputs())
    loss_two, grads_two = two_process_results["with_grad"]
    torch.testing.assert_close(loss_two, loss_one, rtol=1e-6, atol=1e-7)
    assert grads_one.keys() == grads_two.keys() == {"image", "text", "logit_scale"}
    for name, gradient in grads_one.items():
        torch.testing.assert_close(grads_two[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_without_gradient_through_the_gather_the_gradients_differ(two_process_results: dict) -> None:
    """The control: the same loss value, but the encoders' gradients lose the other process's terms."""
    _, grads_one = _loss_and_gradients(TwoTowers(), *_inputs())
    loss_two, grads_two = two_process_results["detached"]
    torch.testing.assert_close(loss_two, two_process_results["with_grad"][0])
    assert not torch.allclose(grads_two["image"], grads_one["image"], rtol=1e-3)
    assert not torch.allclose(grads_two["text"], grads_one["text"], rtol=1e-3)


def test_one_process_loss_equals_transformers_clip_loss(tmp_path: Path) -> None:
    """`ClipTask` on a tiny `CLIPModel` == `CLIPModel(..., return_loss=True).loss`, value and gradients."""
    from transformers import CLIPModel

    from mixkit.testing import build_tiny_clip
    from mixkit.train.clip_task import ClipBatch, ClipTask

    build_tiny_clip(tmp_path)
    model = CLIPModel.from_pretrained(str(tmp_path)).train()
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randn(6, 3, 32, 32, generator=generator)
    ids = torch.randint(0, model.config.text_config.vocab_size - 2, (6, 9), generator=generator)
    ids[:, -1] = model.config.text_config.eos_token_id  # CLIP pools at the end token
    mask = torch.ones_like(ids)
    ours = ClipTask().compute(model, ClipBatch(pixels, ids, mask)).loss
    ours.backward()
    our_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    reference = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss
    reference.backward()
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    for name, parameter in model.named_parameters():
        # Rounding differs between the two graphs: the token embeddings sum ~1e1 gradients, agreeing to ~5e-6.
        torch.testing.assert_close(our_grads[name], parameter.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_mismatched_features_are_refused() -> None:
    with pytest.raises(ValueError, match="pair up"):
        contrastive_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(1.0))
