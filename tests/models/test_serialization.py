"""`take_matching_weights`: the stage-1 -> stage-2 hand-off takes exactly the tensors whose name and shape fit."""

from __future__ import annotations

import torch

from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.models.serialization import take_matching_weights


def test_stage1_weights_go_into_stage2_and_nothing_else() -> None:
    torch.manual_seed(0)
    stage1 = Blip2Stage1Model(tiny_blip2_config(stage1=True))
    stage2 = Blip2Model(tiny_blip2_config("opt"))
    before = {name: value.clone() for name, value in stage2.state_dict().items()}
    state = stage1.state_dict()
    state["query_tokens"] = torch.randn_like(state["query_tokens"])
    state["qformer.layernorm.weight"] = torch.randn(7)  # a wrong shape is left behind, not forced in
    taken = take_matching_weights(stage2, state)
    after = stage2.state_dict()
    shared = {name for name in state if name in before and before[name].shape == state[name].shape}
    assert taken == shared and "query_tokens" in taken and "qformer.layernorm.weight" not in taken
    assert not any(name.startswith(("language_model.", "language_projection.")) for name in taken)
    for name, value in after.items():
        assert torch.equal(value, state[name] if name in taken else before[name]), name
