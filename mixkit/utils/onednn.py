"""fp32 linear layers through oneDNN on CPU, for inference.

PyTorch's CPU `nn.Linear` calls the BLAS it was built with (MKL in the official wheels). On AMD CPUs MKL takes a
slow generic path, while oneDNN (also in every wheel, used by `torch.compile` for CPU linears) runs its own
AVX-512 kernels: on this project's 2-core AMD EPYC the same fp32 products run 2-4x faster (benchmarks/RESULTS.md,
"oneDNN linear layers"). The arithmetic stays fp32; only the summation order of each dot product differs (about
1e-6 relative), as between any two BLAS libraries.

`use_onednn_linears(model)` switches a model's `nn.Linear` layers to `OneDnnLinear` in place (a subclass: same
parameters, same state dict). A layer takes the oneDNN path only where nothing needs its gradient (inference,
frozen towers under `no_grad`), on CPU and in fp32; everything else is `nn.Linear` as before. Set
`MIXKIT_ONEDNN_LINEAR=0` to keep PyTorch's own path.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this PyTorch has oneDNN's linear operator and it agrees with `F.linear` on a probe (checked once:
    the operator is internal to PyTorch, so a build without it, or one that changed it, falls back)."""
    if os.environ.get("MIXKIT_ONEDNN_LINEAR", "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    operator = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if operator is None:
        return False
    generator = torch.Generator().manual_seed(0)
    inputs, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((3, 5, 16), (8, 16), (8,)))
    try:
        with torch.no_grad():
            result = operator(inputs, weight, bias, "none", [], "")
    except RuntimeError:
        return False
    return torch.allclose(result, nn.functional.linear(inputs, weight, bias), rtol=1e-5, atol=1e-5)


class OneDnnLinear(nn.Linear):
    """`nn.Linear` whose gradient-free fp32 CPU calls run on oneDNN."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.with_bias(inputs, self.bias)

    def with_bias(self, inputs: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """`F.linear(inputs, self.weight, bias)`: this layer's weight with another bias (BLIP-2's ViT builds its
        qkv bias from two parts)."""
        needs_grad = torch.is_grad_enabled() and (inputs.requires_grad or self.weight.requires_grad
                                                  or (bias is not None and bias.requires_grad))
        if (needs_grad or inputs.device.type != "cpu" or inputs.dtype != torch.float32
                or self.weight.dtype != torch.float32 or inputs.numel() == 0):
            return nn.functional.linear(inputs, self.weight, bias)
        flat = inputs.reshape(-1, inputs.shape[-1])
        if not flat.is_contiguous():
            flat = flat.contiguous()
        result = torch.ops.mkldnn._linear_pointwise(flat, self.weight, bias, "none", [], "")
        return result.view(*inputs.shape[:-1], self.out_features)


def linear_with_bias(layer: nn.Linear, inputs: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(inputs, layer.weight, bias)`, on oneDNN where `layer` was switched by `use_onednn_linears`."""
    if isinstance(layer, OneDnnLinear):
        return layer.with_bias(inputs, bias)
    return nn.functional.linear(inputs, layer.weight, bias)


def use_onednn_linears(model: nn.Module) -> int:
    """Switch every plain `nn.Linear` in `model` to `OneDnnLinear` (in place; subclasses of `nn.Linear`, such as
    quantised or LoRA layers, are left alone). Returns how many were switched: 0 where oneDNN is unavailable or
    turned off."""
    if not onednn_linear_available():
        return 0
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDnnLinear
            switched += 1
    return switched
