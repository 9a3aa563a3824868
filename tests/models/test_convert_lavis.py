"""LAVIS -> mixkit checkpoint conversion on tiny random models.

The LAVIS side is synthesised independently of the converter: key names follow the LAVIS modules
(``eva_vit.py``, ``Qformer.py``, ``blip2_qformer.py``, ``blip2_opt.py``, ``blip2_t5.py``) and every tensor holds
distinct random values, so a weight landing in the wrong place is caught by value, not only by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    OPTForCausalLM,
    T5ForConditionalGeneration,
)

from mixkit.models.blip2.convert_lavis import STAGE1_EXTRA_KEYS, ConversionError, convert_lavis_state_dict, target_keys
from mixkit.models.blip2.lavis_files import load_lavis_checkpoint, main_convert, untie_for_safetensors

VISION = dict(
    hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2, image_size=8, patch_size=4
)
# Q-Former width differs from the ViT width so cross-attention key/value shapes are distinguishable; 3 layers
# with cross-attention every 2nd layer gives layers 0 and 2 cross-attention, layer 1 none.
QFORMER = dict(
    hidden_size=12,
    intermediate_size=20,
    num_hidden_layers=3,
    num_attention_heads=2,
    vocab_size=30,
    max_position_embeddings=10,
    encoder_hidden_size=16,
    cross_attention_frequency=2,
)
OPT = dict(
    model_type="opt", hidden_size=8, ffn_dim=12, num_hidden_layers=1, num_attention_heads=2, vocab_size=40,
    max_position_embeddings=16, word_embed_proj_dim=8,
)
T5 = dict(
    model_type="t5", d_model=8, d_ff=12, d_kv=4, num_layers=1, num_decoder_layers=1, num_heads=2, vocab_size=40,
    feed_forward_proj="gated-gelu",
)


def tiny_config(text: dict | None = None, stage1: bool = False) -> Blip2Config:
    qformer = dict(QFORMER, use_qformer_text_input=stage1)
    return Blip2Config(
        vision_config=VISION, qformer_config=qformer, text_config=text or OPT, num_query_tokens=3,
        image_text_hidden_size=6,
    )


class Random:
    """Distinct random tensors, reproducibly."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.generator)


def _linear(sd: dict[str, Tensor], rand: Random, name: str, out_dim: int, in_dim: int) -> None:
    sd[f"{name}.weight"], sd[f"{name}.bias"] = rand(out_dim, in_dim), rand(out_dim)


def _norm(sd: dict[str, Tensor], rand: Random, name: str, dim: int) -> None:
    sd[f"{name}.weight"], sd[f"{name}.bias"] = rand(dim), rand(dim)


def lavis_vit(rand: Random, prefix: str = "visual_encoder.") -> dict[str, Tensor]:
    """EVA ``VisionTransformer`` keys (use_rel_pos_bias off, qkv_bias on, as create_eva_vit_g builds it)."""
    d, f, p = VISION["hidden_size"], VISION["intermediate_size"], VISION["patch_size"]
    num_patches = (VISION["image_size"] // p) ** 2
    sd = {"cls_token": rand(1, 1, d), "pos_embed": rand(1, num_patches + 1, d)}
    sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = rand(d, 3, p, p), rand(d)
    for i in range(VISION["num_hidden_layers"]):
        block = f"blocks.{i}"
        _norm(sd, rand, f"{block}.norm1", d)
        sd[f"{block}.attn.qkv.weight"] = rand(3 * d, d)  # nn.Linear(bias=False)
        sd[f"{block}.attn.q_bias"], sd[f"{block}.attn.v_bias"] = rand(d), rand(d)
        _linear(sd, rand, f"{block}.attn.proj", d, d)
        _norm(sd, rand, f"{block}.norm2", d)
        _linear(sd, rand, f"{block}.mlp.fc1", f, d)
        _linear(sd, rand, f"{block}.mlp.fc2", d, f)
    return {prefix + key: value for key, value in sd.items()}


def lavis_qformer(rand: Random, stage1: bool) -> dict[str, Tensor]:
    """``Qformer`` (BertLMHeadModel) keys; stage-2 models set cls, word/position embeddings, text FFN to None."""
    h, i_dim, v, p = (QFORMER[k] for k in ("hidden_size", "intermediate_size", "vocab_size", "max_position_embeddings"))
    bert = "Qformer.bert"
    sd: dict[str, Tensor] = {"query_tokens": rand(1, 3, h)}
    _norm(sd, rand, f"{bert}.embeddings.LayerNorm", h)
    sd[f"{bert}.embeddings.position_ids"] = torch.arange(p).expand(1, -1)
    for n in range(QFORMER["num_hidden_layers"]):
        layer = f"{bert}.encoder.layer.{n}"
        blocks = ["attention", "crossattention"] if n % QFORMER["cross_attention_frequency"] == 0 else ["attention"]
        for block in blocks:
            kv_dim = VISION["hidden_size"] if block == "crossattention" else h
            _linear(sd, rand, f"{layer}.{block}.self.query", h, h)
            _linear(sd, rand, f"{layer}.{block}.self.key", h, kv_dim)
            _linear(sd, rand, f"{layer}.{block}.self.value", h, kv_dim)
            _linear(sd, rand, f"{layer}.{block}.output.dense", h, h)
            _norm(sd, rand, f"{layer}.{block}.output.LayerNorm", h)
        for suffix in ("_query", "") if stage1 else ("_query",):
            _linear(sd, rand, f"{layer}.intermediate{suffix}.dense", i_dim, h)
            _linear(sd, rand, f"{layer}.output{suffix}.dense", h, i_dim)
            _norm(sd, rand, f"{layer}.output{suffix}.LayerNorm", h)
    if stage1:
        sd[f"{bert}.embeddings.word_embeddings.weight"] = rand(v, h)
        sd[f"{bert}.embeddings.position_embeddings.weight"] = rand(p, h)
        head = "Qformer.cls.predictions"
        _linear(sd, rand, f"{head}.transform.dense", h, h)
        _norm(sd, rand, f"{head}.transform.LayerNorm", h)
        sd[f"{head}.bias"] = rand(v)
        # Tied aliases: state_dict() lists a shared tensor under every name.
        sd[f"{head}.decoder.weight"] = sd[f"{bert}.embeddings.word_embeddings.weight"]
        sd[f"{head}.decoder.bias"] = sd[f"{head}.bias"]
    return sd


def lavis_stage1_heads(rand: Random) -> dict[str, Tensor]:
    h, e = QFORMER["hidden_size"], 6
    sd = {"temp": torch.tensor(0.07)}
    for name, out_dim in (("vision_proj", e), ("text_proj", e), ("itm_head", 2)):
        _linear(sd, rand, name, out_dim, h)
    return sd


def lavis_language_model(rand: Random, kind: str, config: Blip2Config) -> dict[str, Tensor]:
    """``opt_model``/``t5_model`` are transformers models in LAVIS, so their own keys appear under the prefix."""
    model_class = OPTForCausalLM if kind == "opt" else T5ForConditionalGeneration
    sd = {f"{kind}_model.{k}": rand(*v.shape) for k, v in model_class(config.text_config).state_dict().items()}
    if kind == "opt":  # OPT ties lm_head to the input embeddings
        sd["opt_model.lm_head.weight"] = sd["opt_model.model.decoder.embed_tokens.weight"]
    else:  # T5 ties both embed_tokens to shared; Flan-T5's lm_head is its own tensor
        for side in ("encoder", "decoder"):
            sd[f"t5_model.{side}.embed_tokens.weight"] = sd["t5_model.shared.weight"]
    _linear(sd, rand, f"{kind}_proj", config.text_config.hidden_size if kind == "opt" else T5["d_model"],
            QFORMER["hidden_size"])
    return sd


def lavis_state_dict(kind: str, config: Blip2Config, vit: bool = True, language_model: bool = True) -> dict:
    rand = Random()
    sd = lavis_vit(rand) if vit else {}
    _norm(sd, rand, "ln_vision", VISION["hidden_size"])
    sd |= lavis_qformer(rand, stage1=kind == "stage1")
    if kind == "stage1":
        return sd | lavis_stage1_heads(rand)
    return sd | (lavis_language_model(rand, kind, config) if language_model else {})


def untie_t5_lm_head(model: Blip2ForConditionalGeneration) -> None:
    """transformers 5 forces T5 lm_head = shared; Flan-T5 keeps them apart, so give lm_head its own tensor."""
    lm_head = model.language_model.lm_head
    lm_head.weight = torch.nn.Parameter(lm_head.weight.detach().clone())


@pytest.mark.parametrize("kind", ["opt", "t5"])
def test_stage2_converts_and_strict_loads(kind: str) -> None:
    config = tiny_config(OPT if kind == "opt" else T5)
    model = Blip2ForConditionalGeneration(config)
    if kind == "t5":
        untie_t5_lm_head(model)
    lavis = lavis_state_dict(kind, config)
    report = convert_lavis_state_dict(lavis, kind)
    report.check_against(set(model.state_dict()))
    model.load_state_dict(report.state_dict, strict=True)
    sd, d = model.state_dict(), VISION["hidden_size"]

    qkv_bias = sd["vision_model.encoder.layers.1.self_attn.qkv.bias"]
    torch.testing.assert_close(qkv_bias[:d], lavis["visual_encoder.blocks.1.attn.q_bias"])
    torch.testing.assert_close(qkv_bias[d : 2 * d], torch.zeros(d))
    torch.testing.assert_close(qkv_bias[2 * d :], lavis["visual_encoder.blocks.1.attn.v_bias"])
    expected = {
        "vision_model.post_layernorm.weight": "ln_vision.weight",
        "vision_model.embeddings.class_embedding": "visual_encoder.cls_token",
        "vision_model.embeddings.position_embedding": "visual_encoder.pos_embed",
        "vision_model.encoder.layers.0.self_attn.projection.weight": "visual_encoder.blocks.0.attn.proj.weight",
        "qformer.layernorm.bias": "Qformer.bert.embeddings.LayerNorm.bias",
        "qformer.encoder.layer.2.crossattention.attention.key.weight":
            "Qformer.bert.encoder.layer.2.crossattention.self.key.weight",
        "qformer.encoder.layer.1.output_query.LayerNorm.weight":
            "Qformer.bert.encoder.layer.1.output_query.LayerNorm.weight",
        "query_tokens": "query_tokens",
        "language_projection.weight": f"{kind}_proj.weight",
        "language_model.lm_head.weight": f"{kind}_model.lm_head.weight",
    }
    for ours, theirs in expected.items():
        torch.testing.assert_close(sd[ours], lavis[theirs], msg=f"{theirs} -> {ours}")
    assert "Qformer.bert.embeddings.position_ids" in report.dropped
    assert report.unmapped == []


def test_t5_lm_head_stays_apart_from_shared() -> None:
    config = tiny_config(T5)
    report = convert_lavis_state_dict(lavis_state_dict("t5", config), "t5")
    sd = report.state_dict
    assert not torch.equal(sd["language_model.lm_head.weight"], sd["language_model.shared.weight"])


def stage1_keys(config: Blip2Config) -> set[str]:
    return set(Blip2ForImageTextRetrieval(config).state_dict()) | set(STAGE1_EXTRA_KEYS)


def test_stage1_converts_to_stage1_key_set() -> None:
    config = tiny_config(stage1=True)
    lavis = lavis_state_dict("stage1", config)
    report = convert_lavis_state_dict(lavis, "stage1")
    expected = stage1_keys(config)
    assert set(report.state_dict) == expected
    assert target_keys(config, "stage1") == expected
    report.check_against(expected)
    sd = report.state_dict
    torch.testing.assert_close(sd["lm_head.bias"], lavis["Qformer.cls.predictions.bias"])
    torch.testing.assert_close(sd["temp"], torch.tensor(0.07))
    torch.testing.assert_close(
        sd["qformer.encoder.layer.1.intermediate.dense.weight"],
        lavis["Qformer.bert.encoder.layer.1.intermediate.dense.weight"],
    )
    assert set(report.dropped) == {
        "Qformer.bert.embeddings.position_ids",
        "Qformer.cls.predictions.decoder.weight",
        "Qformer.cls.predictions.decoder.bias",
    }
    retrieval = Blip2ForImageTextRetrieval(config)
    retrieval.load_state_dict({k: v for k, v in sd.items() if k not in STAGE1_EXTRA_KEYS}, strict=True)
    torch.testing.assert_close(
        retrieval.embeddings.word_embeddings.weight, lavis["Qformer.bert.embeddings.word_embeddings.weight"]
    )
    torch.testing.assert_close(retrieval.vision_projection.weight, lavis["vision_proj.weight"])


def test_stage1_decoder_that_is_not_tied_is_an_error() -> None:
    lavis = lavis_state_dict("stage1", tiny_config(stage1=True))
    lavis["Qformer.cls.predictions.decoder.weight"] = lavis["Qformer.cls.predictions.decoder.weight"] + 1
    with pytest.raises(ConversionError, match="decoder.weight differs"):
        convert_lavis_state_dict(lavis, "stage1")


def test_stage1_checkpoint_initialises_stage2() -> None:
    """LAVIS stage 2 starts from the stage-1 checkpoint; its text branch and heads are dropped with reasons."""
    config = tiny_config(OPT)
    lavis = lavis_state_dict("stage1", config)
    report = convert_lavis_state_dict(lavis, "opt")
    assert report.unmapped == []
    assert "temp" in report.dropped and "Qformer.cls.predictions.transform.dense.weight" in report.dropped
    assert "Qformer.bert.encoder.layer.0.output.dense.weight" in report.dropped
    check = report.check_against(target_keys(config, "opt"), ("language_model.", "language_projection."))
    assert check.missing == [] and "language_projection.weight" in check.provided_elsewhere


def test_unknown_key_is_unmapped_and_fails_the_check() -> None:
    config = tiny_config(OPT)
    lavis = lavis_state_dict("opt", config) | {"Qformer.bert.pooler.dense.weight": torch.zeros(2)}
    report = convert_lavis_state_dict(lavis, "opt")
    assert report.unmapped == ["Qformer.bert.pooler.dense.weight"]
    with pytest.raises(ConversionError, match="unmapped LAVIS keys \\(1\\)"):
        report.check_against(target_keys(config, "opt"))


def test_lone_q_bias_is_unmapped_not_guessed() -> None:
    config = tiny_config(OPT)
    lavis = lavis_state_dict("opt", config)
    del lavis["visual_encoder.blocks.0.attn.v_bias"]
    report = convert_lavis_state_dict(lavis, "opt")
    assert report.unmapped == ["visual_encoder.blocks.0.attn.q_bias"]


def test_missing_qformer_key_is_reported() -> None:
    config = tiny_config(OPT)
    lavis = lavis_state_dict("opt", config)
    del lavis["Qformer.bert.encoder.layer.1.output_query.dense.weight"]
    report = convert_lavis_state_dict(lavis, "opt")
    check = report.check_against(target_keys(config, "opt"), raise_on_error=False)
    assert check.missing == ["qformer.encoder.layer.1.output_query.dense.weight"]
    with pytest.raises(ConversionError, match="qformer.encoder.layer.1.output_query.dense.weight"):
        report.check_against(target_keys(config, "opt"), ("vision_model.", "language_model."))


def test_frozen_towers_may_be_missing_only_when_declared() -> None:
    config = tiny_config(OPT)
    lavis = lavis_state_dict("opt", config, vit=False, language_model=False)
    lavis |= {k: v for k, v in lavis_language_model(Random(), "opt", config).items() if k.startswith("opt_proj")}
    report = convert_lavis_state_dict(lavis, "opt")
    keys = target_keys(config, "opt")
    with pytest.raises(ConversionError, match=r"missing keys \(\d+\):(.|\n)*\.\.\. and \d+ more"):
        report.check_against(keys)
    declared = ("vision_model.encoder.", "vision_model.embeddings.", "language_model.")
    check = report.check_against(keys, declared)
    assert check.ok and "vision_model.encoder.layers.0.self_attn.qkv.bias" in check.provided_elsewhere
    del report.state_dict["vision_model.post_layernorm.weight"]  # ln_vision is trained: never "elsewhere"
    with pytest.raises(ConversionError, match="vision_model.post_layernorm.weight"):
        report.check_against(keys, declared)


def test_load_checkpoint_unwraps_and_prefixes(tmp_path: Path) -> None:
    tensor = torch.arange(3.0)
    wrapped = tmp_path / "checkpoint_9.pth"
    torch.save({"model": {"ln_vision.weight": tensor}, "epoch": 9, "config": {"run": {"lr": 1e-4}}}, wrapped)
    assert torch.equal(load_lavis_checkpoint(wrapped)["ln_vision.weight"], tensor)
    bare = tmp_path / "eva_vit_g.pth"
    torch.save({"blocks.0.norm1.weight": tensor}, bare)
    assert list(load_lavis_checkpoint(bare, prefix="visual_encoder.")) == ["visual_encoder.blocks.0.norm1.weight"]


class Arbitrary:
    """Anything weights_only unpickling does not allow."""


def test_load_checkpoint_refuses_unsafe_pickle(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": Arbitrary()}, path)
    with pytest.raises(ConversionError, match="evil.pth: refusing to load"):
        load_lavis_checkpoint(path)


def test_untie_for_safetensors(tmp_path: Path) -> None:
    shared = torch.randn(4, 2)
    out = untie_for_safetensors({"a": shared, "b": shared, "c": shared.t()})
    save_file(out, str(tmp_path / "m.safetensors"))
    loaded = load_file(str(tmp_path / "m.safetensors"))
    assert torch.equal(loaded["b"], shared) and torch.equal(loaded["c"], shared.t())


def test_cli_writes_safetensors_and_report(tmp_path: Path) -> None:
    config = tiny_config(OPT)
    config.save_pretrained(tmp_path / "config")
    lavis = lavis_state_dict("opt", config, vit=False, language_model=False)
    lavis |= {k: v for k, v in lavis_language_model(Random(), "opt", config).items() if k.startswith("opt_proj")}
    torch.save({"model": lavis, "epoch": 1}, tmp_path / "blip2_opt.pth")
    torch.save(lavis_vit(Random(), prefix=""), tmp_path / "eva_vit_g.pth")
    args = ["--lavis", str(tmp_path / "blip2_opt.pth"), "--kind", "opt", "--vit", str(tmp_path / "eva_vit_g.pth"),
            "--config", str(tmp_path / "config"), "--output", str(tmp_path / "out")]
    assert main_convert(args) == 0
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(weights) == {k for k in target_keys(config, "opt") if not k.startswith("language_model.")}
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert report["missing"] == [] and report["unexpected"] == [] and report["unmapped"] == []
    assert all(k.startswith("language_model.") for k in report["missing_provided_elsewhere"])
    assert "Qformer.bert.embeddings.position_ids" in report["dropped"]

    torch.save(lavis | {"mystery": torch.zeros(1)}, tmp_path / "bad.pth")
    args[1], args[-1] = str(tmp_path / "bad.pth"), str(tmp_path / "bad_out")
    assert main_convert(args) == 1
    assert not (tmp_path / "bad_out" / "model.safetensors").exists()
    assert json.loads((tmp_path / "bad_out" / "conversion_report.json").read_text())["unmapped"] == ["mystery"]


def test_base_makes_the_conversion_a_complete_loadable_checkpoint(tmp_path: Path) -> None:
    from mixkit.models.blip2.modeling import Blip2Model

    config = tiny_config(OPT)
    base = Blip2Model(config)
    base.save_pretrained(tmp_path / "base")
    lavis = lavis_state_dict("opt", config, vit=False, language_model=False)
    lavis |= {k: v for k, v in lavis_language_model(Random(), "opt", config).items() if k.startswith("opt_proj")}
    torch.save({"model": lavis}, tmp_path / "blip2_opt.pth")
    args = ["--lavis", str(tmp_path / "blip2_opt.pth"), "--kind", "opt", "--base", str(tmp_path / "base"),
            "--output", str(tmp_path / "out")]
    assert main_convert(args) == 0
    model = Blip2Model.from_pretrained(tmp_path / "out")
    converted = load_file(str(tmp_path / "out" / "model.safetensors"))
    state = model.state_dict()
    for key, value in converted.items():
        assert torch.equal(state[key], value), key  # LAVIS-trained parts from the .pth
    for key, value in base.state_dict().items():
        if key not in converted:
            assert torch.equal(state[key], value), key  # frozen LLM and ViT from the base
    assert any(key.startswith("language_model.") for key in state) and not any(
        key.startswith("language_model.") for key in converted)
