"""`OneDnnLinear`: the numbers of `nn.Linear` (within fp32 summation-order differences) through oneDNN where no
gradient is needed, `nn.Linear` itself everywhere else, and the same parameters and state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mixkit.utils import onednn
from mixkit.utils.onednn import OneDnnLinear, linear_with_bias, use_onednn_linears

pytestmark = pytest.mark.skipif(not onednn.onednn_linear_available(), reason="this PyTorch has no oneDNN linear")


def ran_onednn(call) -> tuple[torch.Tensor, bool]:
    """The result of `call()` and whether oneDNN's linear operator ran in it."""
    with torch.autograd.profiler.profile() as profile:
        result = call()
    return result, any("_linear_pointwise" in event.name for event in profile.function_events)


def layer_pair(bias: bool = True) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    reference = nn.Linear(48, 80, bias=bias)
    switched = nn.Linear(48, 80, bias=bias)
    switched.load_state_dict(reference.state_dict())
    assert use_onednn_linears(switched) == 1
    return reference, switched


@pytest.mark.parametrize("shape", [(5, 48), (2, 7, 48), (3, 2, 4, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_inference_matches_nn_linear_on_onednn(shape, bias) -> None:
    reference, switched = layer_pair(bias)
    inputs = torch.randn(*shape)
    with torch.no_grad():
        result, used = ran_onednn(lambda: switched(inputs))
        torch.testing.assert_close(result, reference(inputs), rtol=1e-5, atol=1e-5)
    assert used and result.shape == (*shape[:-1], 80)


def test_non_contiguous_inputs_and_another_bias() -> None:
    reference, switched = layer_pair()
    inputs = torch.randn(48, 6).t()  # a transposed view
    other_bias = torch.randn(80)
    with torch.inference_mode():
        torch.testing.assert_close(switched(inputs), reference(inputs), rtol=1e-5, atol=1e-5)
        result, used = ran_onednn(lambda: linear_with_bias(switched, inputs, other_bias))
        torch.testing.assert_close(result, nn.functional.linear(inputs, reference.weight, other_bias),
                                   rtol=1e-5, atol=1e-5)
    assert used
    # An unswitched layer takes the same call through PyTorch.
    torch.testing.assert_close(linear_with_bias(reference, inputs, other_bias).detach(),
                               nn.functional.linear(inputs, reference.weight, other_bias).detach())


def test_training_keeps_pytorch_path_and_identical_gradients() -> None:
    reference, switched = layer_pair()
    inputs = torch.randn(4, 48, requires_grad=True)
    result, used = ran_onednn(lambda: switched(inputs))
    assert not used
    result.square().sum().backward()
    expected = reference(inputs.detach().requires_grad_()).square().sum()
    expected.backward()
    assert torch.equal(switched.weight.grad, reference.weight.grad)
    # A frozen layer fed by a trainable one needs the input gradient: PyTorch's path too.
    switched.requires_grad_(False)
    _, used = ran_onednn(lambda: switched(torch.randn(4, 48, requires_grad=True)))
    assert not used


def test_other_dtypes_fall_back() -> None:
    reference, switched = layer_pair()
    reference.bfloat16(), switched.bfloat16()
    inputs = torch.randn(3, 48, dtype=torch.bfloat16)
    with torch.no_grad():
        result, used = ran_onednn(lambda: switched(inputs))
    assert not used and torch.equal(result, reference(inputs))


def test_switch_keeps_parameters_and_skips_subclasses() -> None:
    class Custom(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Custom(4, 4), nn.Sequential(nn.Linear(4, 2)))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert use_onednn_linears(model) == 2
    assert type(model[0]) is OneDnnLinear and type(model[2]) is Custom and type(model[3][0]) is OneDnnLinear
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_can_be_turned_off(monkeypatch) -> None:
    monkeypatch.setenv("MIXKIT_ONEDNN_LINEAR", "0")
    onednn.onednn_linear_available.cache_clear()
    try:
        model = nn.Sequential(nn.Linear(4, 4))
        assert use_onednn_linears(model) == 0 and type(model[0]) is nn.Linear
    finally:
        monkeypatch.delenv("MIXKIT_ONEDNN_LINEAR")
        onednn.onednn_linear_available.cache_clear()
