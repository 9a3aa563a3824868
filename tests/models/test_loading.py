"""`from_pretrained` builds the model on `meta` and assigns the checkpoint's tensors. The result must equal the
old way, building the model for real and copying the weights in: values, dtypes, ties, trainability and the
buffers no checkpoint holds; and the weights must be the memory-mapped file, not a second copy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Blip2Config, LlamaConfig

from mixkit.models.blip2.modeling import Blip2Base, Blip2Model, read_weights_with_base
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.models.serialization import load_weights_strict, meta_tensor_names, parameters_on_meta, tied_groups
from mixkit.testing import randomize_

PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
PROMPTS = torch.tensor([[2, 10, 11, 12], [2, 13, 14, 15]])


def built_and_copied(cls: type[Blip2Base], directory: Path, allowed: tuple[str, ...] = ()) -> Blip2Base:
    """What `from_pretrained` did before the meta device: random initialisation, then the checkpoint copied in."""
    model = cls(Blip2Config.from_pretrained(directory))
    load_weights_strict(model, read_weights_with_base(directory), allowed)
    return model.eval()


def assert_same_model(new: torch.nn.Module, old: torch.nn.Module) -> None:
    assert meta_tensor_names(new) == []
    new_state, old_state = new.state_dict(), old.state_dict()
    assert new_state.keys() == old_state.keys()
    for name, value in old_state.items():
        assert new_state[name].dtype == value.dtype and torch.equal(new_state[name], value), name
    new_buffers, old_buffers = dict(new.named_buffers()), dict(old.named_buffers())
    assert new_buffers.keys() == old_buffers.keys()
    for name, value in old_buffers.items():  # non-persistent ones too: they are in no checkpoint
        assert torch.equal(new_buffers[name], value), name
    assert tied_groups(new) == tied_groups(old)
    assert [p.requires_grad for p in new.parameters()] == [p.requires_grad for p in old.parameters()]


def save_random(cls: type[Blip2Base], config: Blip2Config, directory: Path) -> Blip2Base:
    model = randomize_(cls(config), seed=3, std=0.15)
    model.save_pretrained(directory)
    return model


def llama_config() -> Blip2Config:
    """BLIP-2 with a tiny Llama: its rotary tables are non-persistent buffers, in no checkpoint."""
    base = tiny_blip2_config("opt")
    llama = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=2,
                        eos_token_id=2, pad_token_id=1)
    return Blip2Config(vision_config=base.vision_config.to_dict(), qformer_config=base.qformer_config.to_dict(),
                       text_config=llama.to_dict(), num_query_tokens=base.num_query_tokens)


@pytest.mark.parametrize("family", ["opt", "t5", "llama", "stage1"])
def test_loads_as_building_and_copying_did(family: str, tmp_path: Path) -> None:
    cls = Blip2Stage1Model if family == "stage1" else Blip2Model
    config = llama_config() if family == "llama" else tiny_blip2_config(
        "opt" if family == "stage1" else family, stage1=family == "stage1")
    save_random(cls, config, tmp_path)
    new, old = cls.from_pretrained(tmp_path), built_and_copied(cls, tmp_path)
    assert_same_model(new, old)
    if family == "llama":
        assert any(name.endswith("inv_freq") for name, _ in new.named_buffers())
    if cls is Blip2Model:
        with torch.no_grad():
            assert torch.equal(new(PIXELS, PROMPTS, **_decoder(family)).logits,
                               old(PIXELS, PROMPTS, **_decoder(family)).logits)


def _decoder(family: str) -> dict[str, torch.Tensor]:
    return {"decoder_input_ids": torch.tensor([[0, 5], [0, 7]])} if family == "t5" else {}


def test_opt_head_stays_tied_to_the_embeddings(tmp_path: Path) -> None:
    save_random(Blip2Model, tiny_blip2_config("opt"), tmp_path)
    model = Blip2Model.from_pretrained(tmp_path)
    assert model.language_model.get_output_embeddings().weight is model.language_model.get_input_embeddings().weight


def test_half_precision_checkpoint_is_cast_as_copying_did(tmp_path: Path) -> None:
    save_random(Blip2Model, tiny_blip2_config("opt"), tmp_path)
    weights = {name: value.half() for name, value in load_file(str(tmp_path / "model.safetensors")).items()}
    save_file(weights, str(tmp_path / "model.safetensors"), {"format": "pt"})
    new = Blip2Model.from_pretrained(tmp_path)
    assert {p.dtype for p in new.parameters()} == {torch.float32}
    assert_same_model(new, built_and_copied(Blip2Model, tmp_path))


def test_trainable_only_checkpoint_takes_the_rest_from_its_base(tmp_path: Path) -> None:
    base = save_random(Blip2Model, tiny_blip2_config("opt"), tmp_path / "base")
    base.lock_frozen_parts()
    with torch.no_grad():
        base.language_projection.weight.add_(1.0)
    base.save_pretrained(tmp_path / "trained", base_model=str(tmp_path / "base"))
    new = Blip2Model.from_pretrained(tmp_path / "trained")
    assert_same_model(new, built_and_copied(Blip2Model, tmp_path / "trained"))
    assert torch.equal(new.language_projection.weight, base.language_projection.weight)


def test_weights_allowed_to_be_missing_get_the_initialisation_they_always_had(tmp_path: Path) -> None:
    save_random(Blip2Model, tiny_blip2_config("opt"), tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("language_projection.")},
              str(tmp_path / "model.safetensors"), {"format": "pt"})
    allowed = ("language_projection.",)
    torch.manual_seed(7)
    new = Blip2Model.from_pretrained(tmp_path, allowed_missing_prefixes=allowed)
    torch.manual_seed(7)
    assert_same_model(new, built_and_copied(Blip2Model, tmp_path, allowed))


def test_building_on_meta_initialises_nothing() -> None:
    with parameters_on_meta():
        model = Blip2Model(llama_config())
    assert all(p.is_meta for p in model.parameters())
    assert all(not b.is_meta for b in model.buffers())
    assert not torch.nn.Linear(2, 2).weight.is_meta  # the hook is gone afterwards


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_weights_are_the_memory_mapped_file(tmp_path: Path) -> None:
    """One copy in memory: the parameters point into the mapping of model.safetensors (copy-on-write)."""
    save_random(Blip2Model, tiny_blip2_config("opt"), tmp_path)
    model = Blip2Model.from_pretrained(tmp_path)
    path = str((tmp_path / "model.safetensors").resolve())
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(path):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((start, end))
    pointer = model.language_model.get_input_embeddings().weight.data_ptr()
    assert any(start <= pointer < end for start, end in ranges)
