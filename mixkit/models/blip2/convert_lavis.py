"""Convert LAVIS BLIP-2 ``.pth`` checkpoints into mixkit's state-dict layout.

mixkit's layout is the ``transformers`` one (``Blip2ForConditionalGeneration`` for stage 2; for stage 1 the
``Blip2ForImageTextRetrieval`` keys with the Q-Former text feed-forward, plus ``temp`` and the ITG ``lm_head``).
The conversion is declarative: an ordered list of regex renames, a list of deliberately dropped LAVIS keys (each
with its reason), and the few structural transforms that a rename cannot express. Nothing is dropped silently:
every LAVIS key ends up converted, dropped with a reason, or reported as unmapped.

LAVIS facts this relies on (LAVIS commit 506965b):
- ``lavis/models/eva_vit.py``: ``Attention`` has ``qkv`` without bias plus separate ``q_bias``/``v_bias`` and
  computes ``cat(q_bias, zeros, v_bias)`` on the fly; ``cls_token`` is [1, 1, D], ``pos_embed`` [1, 1 + P, D].
- ``Qformer.BertEmbeddings.position_ids`` is a *persistent* buffer, so it is in every LAVIS state dict.
- ``blip2_opt.py``/``blip2_t5.py`` set ``Qformer.cls``, the Q-Former word/position embeddings and each layer's
  text ``intermediate``/``output`` to ``None``; they initialise from a stage-1 checkpoint with ``strict=False``,
  which silently ignores those and the stage-1 heads (``vision_proj``, ``text_proj``, ``itm_head``, ``temp``).
- ``runners/runner_base.py::_save_checkpoint`` deletes parameters with ``requires_grad=False`` but keeps buffers
  and tied aliases (``named_parameters`` de-duplicates them), so stage-1/2 checkpoints hold the Q-Former,
  ``query_tokens``, ``ln_vision`` and the projection; the frozen ViT and language model come from elsewhere.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mixkit.models.blip2.lavis_options import KINDS, Kind

STAGE2: tuple[Kind, ...] = ("opt", "t5")

# Keys the stage-1 model has on top of transformers' Blip2ForImageTextRetrieval (see module docstring).
STAGE1_EXTRA_KEYS: tuple[str, ...] = (
    "temp",
    "lm_head.transform.dense.weight",
    "lm_head.transform.dense.bias",
    "lm_head.transform.LayerNorm.weight",
    "lm_head.transform.LayerNorm.bias",
    "lm_head.bias",
)
# Prefixes whose keys a LAVIS checkpoint usually lacks because they were frozen during training.
VISION_TOWER_PREFIXES: tuple[str, ...] = ("vision_model.encoder.", "vision_model.embeddings.")
LANGUAGE_MODEL_PREFIXES: tuple[str, ...] = ("language_model.",)
_LIST_LIMIT = 20


class ConversionError(ValueError):
    """A LAVIS checkpoint cannot be converted faithfully; the message names every offending key or file."""


@dataclass(frozen=True)
class Rename:
    """Rename every LAVIS key matching ``pattern`` (anchored regex) with ``re`` replacement ``template``."""

    pattern: str
    template: str
    kinds: tuple[Kind, ...] = KINDS


@dataclass(frozen=True)
class Drop:
    """A LAVIS key deliberately left out. ``tied_to`` names a LAVIS key it must equal (a tied alias)."""

    pattern: str
    reason: str
    kinds: tuple[Kind, ...] = KINDS
    tied_to: str | None = None


_VIT = r"^visual_encoder\.blocks\.(\d+)\."
_VIT_OUT = r"vision_model.encoder.layers.\1."
_QF = r"^Qformer\.bert\.encoder\.layer\.(\d+)\."
_QF_OUT = r"qformer.encoder.layer.\1."

# First matching rule wins. Structural transforms (below) run before these and consume their keys.
RENAMES: tuple[Rename, ...] = (
    # EVA ViT-g -> Blip2VisionModel
    Rename(r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    Rename(_VIT + r"norm1\.", _VIT_OUT + "layer_norm1."),
    Rename(_VIT + r"norm2\.", _VIT_OUT + "layer_norm2."),
    Rename(_VIT + r"attn\.qkv\.weight$", _VIT_OUT + "self_attn.qkv.weight"),
    Rename(_VIT + r"attn\.proj\.", _VIT_OUT + "self_attn.projection."),
    Rename(_VIT + r"mlp\.(fc1|fc2)\.", _VIT_OUT + r"mlp.\2."),
    # LAVIS keeps the final LayerNorm outside the ViT; transformers keeps it inside.
    Rename(r"^ln_vision\.", "vision_model.post_layernorm."),
    Rename(r"^query_tokens$", "query_tokens"),
    # Q-Former: BertLMHeadModel.bert -> Blip2QFormerModel (`self` -> `attention`)
    Rename(r"^Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.layernorm."),
    Rename(_QF + r"(attention|crossattention)\.self\.", _QF_OUT + r"\2.attention."),
    Rename(_QF + r"(attention|crossattention)\.output\.", _QF_OUT + r"\2.output."),
    Rename(_QF + r"(intermediate_query|output_query)\.", _QF_OUT + r"\2."),
    # Stage 1 only: the text branch of the Q-Former and the ITC/ITM/ITG heads.
    Rename(_QF + r"(intermediate|output)\.", _QF_OUT + r"\2.", ("stage1",)),
    Rename(r"^Qformer\.bert\.embeddings\.(word|position)_embeddings\.", r"embeddings.\1_embeddings.", ("stage1",)),
    Rename(r"^Qformer\.cls\.predictions\.transform\.", "lm_head.transform.", ("stage1",)),
    Rename(r"^Qformer\.cls\.predictions\.bias$", "lm_head.bias", ("stage1",)),
    Rename(r"^vision_proj\.", "vision_projection.", ("stage1",)),
    Rename(r"^text_proj\.", "text_projection.", ("stage1",)),
    Rename(r"^itm_head\.", "itm_head.", ("stage1",)),
    Rename(r"^temp$", "temp", ("stage1",)),
    # Stage 2: projection and the transformers language model (its own key names are kept).
    Rename(r"^opt_proj\.", "language_projection.", ("opt",)),
    Rename(r"^opt_model\.", "language_model.", ("opt",)),
    Rename(r"^t5_proj\.", "language_projection.", ("t5",)),
    Rename(r"^t5_model\.", "language_model.", ("t5",)),
)

_STAGE2_UNUSED = "LAVIS stage-2 models set it to None; present only in stage-1 checkpoints, ignored by strict=False"
_STAGE1_HEAD = "stage-1 ITC/ITM head; LAVIS stage-2 loads stage-1 weights with strict=False and ignores it"

DROPS: tuple[Drop, ...] = (
    Drop(
        r"^Qformer\.bert\.embeddings\.position_ids$",
        "persistent arange buffer in LAVIS BertEmbeddings; transformers rebuilds it as a non-persistent buffer",
    ),
    Drop(
        r"^Qformer\.cls\.predictions\.decoder\.weight$",
        "ITG decoder weight is tied to the word embeddings in LAVIS and in mixkit",
        ("stage1",),
        tied_to="Qformer.bert.embeddings.word_embeddings.weight",
    ),
    Drop(
        r"^Qformer\.cls\.predictions\.decoder\.bias$",
        "the same tensor as Qformer.cls.predictions.bias (LAVIS sets decoder.bias = bias)",
        ("stage1",),
        tied_to="Qformer.cls.predictions.bias",
    ),
    Drop(r"^Qformer\.cls\.", _STAGE2_UNUSED, STAGE2),
    Drop(r"^Qformer\.bert\.embeddings\.(word|position)_embeddings\.", _STAGE2_UNUSED, STAGE2),
    Drop(_QF + r"(intermediate|output)\.", _STAGE2_UNUSED, STAGE2),
    Drop(r"^(vision_proj|text_proj|itm_head)\.", _STAGE1_HEAD, STAGE2),
    Drop(r"^temp$", _STAGE1_HEAD, STAGE2),
)


# --- structural transforms: (LAVIS state dict) -> (converted tensors, consumed LAVIS keys) ---------------------

Transform = Callable[[Mapping[str, Tensor]], tuple[dict[str, Tensor], set[str]]]


def fuse_qkv_bias(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """EVA ``q_bias`` + ``v_bias`` -> one ``qkv.bias`` = [q_bias, zeros, v_bias] (the key has no bias).

    A block holding only one of the two is left unconsumed, so it shows up as unmapped instead of guessed.
    """
    out: dict[str, Tensor] = {}
    consumed: set[str] = set()
    for key in sd:
        match = re.match(r"^visual_encoder\.blocks\.(\d+)\.attn\.q_bias$", key)
        v_key = key.replace(".q_bias", ".v_bias")
        if match is None or v_key not in sd:
            continue
        q_bias, v_bias = sd[key], sd[v_key]
        bias = torch.cat((q_bias, torch.zeros_like(v_bias), v_bias))
        out[f"vision_model.encoder.layers.{match.group(1)}.self_attn.qkv.bias"] = bias
        consumed.update((key, v_key))
    return out, consumed


def vision_embeddings(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """``cls_token`` [1, 1, D] and ``pos_embed`` [1, 1 + P, D] keep their shapes in transformers; check them.

    No resizing here: LAVIS interpolates ``pos_embed`` when it builds a model for another image size, so a
    checkpoint for another resolution must fail the strict load rather than be silently reshaped.
    """
    names = {
        "visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
        "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
    }
    out: dict[str, Tensor] = {}
    for lavis_key, key in names.items():
        if lavis_key not in sd:
            continue
        tensor = sd[lavis_key]
        if tensor.dim() != 3 or tensor.shape[0] != 1:
            raise ConversionError(f"{lavis_key} has shape {tuple(tensor.shape)}; expected [1, N, D]")
        if lavis_key.endswith("cls_token") and tensor.shape[1] != 1:
            raise ConversionError(f"{lavis_key} has shape {tuple(tensor.shape)}; expected [1, 1, D]")
        out[key] = tensor
    return out, set(names) & set(sd)


STRUCTURAL: tuple[Transform, ...] = (fuse_qkv_bias, vision_embeddings)


# --- the report -----------------------------------------------------------------------------------------------


def listing(title: str, keys: Sequence[str]) -> str:
    shown = "\n".join(f"  {key}" for key in keys[:_LIST_LIMIT])
    more = f"\n  ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else ""
    return f"{title} ({len(keys)}):\n{shown}{more}"


@dataclass(frozen=True)
class KeyCheck:
    """Outcome of comparing converted keys to a target model's keys."""

    missing: list[str]
    unexpected: list[str]
    unmapped: list[str]
    provided_elsewhere: list[str]  # missing, but under a prefix the caller declared another source for

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.unmapped)

    def message(self) -> str:
        parts = [("missing", self.missing), ("unexpected", self.unexpected), ("unmapped LAVIS", self.unmapped)]
        return "\n".join(listing(f"{name} keys", keys) for name, keys in parts if keys)


@dataclass
class ConversionReport:
    """Converted tensors plus every LAVIS key that did not become one."""

    kind: Kind
    state_dict: dict[str, Tensor]
    unmapped: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # LAVIS key -> reason

    def check_against(
        self, target_keys: Iterable[str], provided_elsewhere: tuple[str, ...] = (), raise_on_error: bool = True
    ) -> KeyCheck:
        """Compare with ``target_keys``; missing keys are allowed only under the declared prefixes.

        Raises ``ConversionError`` listing every offending key (first 20 of each kind, plus counts) unless
        ``raise_on_error`` is False, in which case the ``KeyCheck`` is returned for the caller to report.
        """
        target = set(target_keys)
        absent = sorted(target - self.state_dict.keys())
        elsewhere = [key for key in absent if provided_elsewhere and key.startswith(provided_elsewhere)]
        check = KeyCheck(
            missing=[key for key in absent if not (provided_elsewhere and key.startswith(provided_elsewhere))],
            unexpected=sorted(self.state_dict.keys() - target),
            unmapped=list(self.unmapped),
            provided_elsewhere=elsewhere,
        )
        if raise_on_error and not check.ok:
            raise ConversionError(f"LAVIS {self.kind} checkpoint does not match the target model:\n{check.message()}")
        return check

    def summary(self) -> dict[str, object]:
        """JSON-ready description of the conversion (no tensors)."""
        return {
            "kind": self.kind,
            "converted_keys": len(self.state_dict),
            "unmapped": self.unmapped,
            "dropped": self.dropped,
        }


# --- conversion -----------------------------------------------------------------------------------------------


def _rules_for(kind: Kind) -> tuple[list[Rename], list[Drop]]:
    if kind not in KINDS:
        raise ConversionError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return [r for r in RENAMES if kind in r.kinds], [d for d in DROPS if kind in d.kinds]


def _check_tied(sd: Mapping[str, Tensor], key: str, tied_to: str) -> None:
    """A dropped alias must really equal what it is tied to, or dropping it would lose weights."""
    if tied_to not in sd:
        raise ConversionError(f"{key} is dropped as an alias of {tied_to}, but {tied_to} is not in the checkpoint")
    if sd[key].shape != sd[tied_to].shape or not torch.equal(sd[key], sd[tied_to]):
        raise ConversionError(f"{key} differs from {tied_to}; LAVIS ties them, so the checkpoint is inconsistent")


def _rename(key: str, renames: Sequence[Rename]) -> str | None:
    for rule in renames:
        new_key, count = re.subn(rule.pattern, rule.template, key, count=1)
        if count:
            return new_key
    return None


def convert_lavis_state_dict(lavis_sd: Mapping[str, Tensor], kind: Kind) -> ConversionReport:
    """Map a LAVIS BLIP-2 state dict (``Blip2Qformer``, ``Blip2OPT`` or ``Blip2T5``) onto mixkit's keys."""
    renames, drops = _rules_for(kind)
    return apply_rules(lavis_sd, ConversionReport(kind=kind, state_dict={}), renames, drops)


def apply_rules(lavis_sd: Mapping[str, Tensor], report: ConversionReport, renames: Sequence[Rename],
                drops: Sequence[Drop]) -> ConversionReport:
    """The structural transforms, then per remaining key the first matching drop (tied aliases checked equal)
    or rename, into ``report``; a key no rule matches is listed in ``report.unmapped``. Every family converted
    from LAVIS's BLIP-2 layout (BLIP-2, InstructBLIP) runs this with its own rules."""
    consumed: set[str] = set()
    for transform in STRUCTURAL:
        produced, used = transform(lavis_sd)
        report.state_dict.update(produced)
        consumed |= used
    for key, tensor in lavis_sd.items():
        if key in consumed:
            continue
        drop = next((d for d in drops if re.match(d.pattern, key)), None)
        if drop is not None:
            if drop.tied_to is not None:
                _check_tied(lavis_sd, key, drop.tied_to)
            report.dropped[key] = drop.reason
            continue
        new_key = _rename(key, renames)
        if new_key is None:
            report.unmapped.append(key)
        elif new_key in report.state_dict:
            raise ConversionError(f"two LAVIS keys map to {new_key}; the last one was {key}")
        else:
            report.state_dict[new_key] = tensor
    return report


def target_keys(config: object, kind: Kind) -> set[str]:
    """The keys of mixkit's model for ``kind``, read from a ``transformers.Blip2Config`` (built on meta)."""
    from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval

    _rules_for(kind)
    config = copy.deepcopy(config)  # the stage-1 switch below must not leak into the caller's config
    with torch.device("meta"):
        if kind == "stage1":
            config.qformer_config.use_qformer_text_input = True  # type: ignore[attr-defined]
            return set(Blip2ForImageTextRetrieval(config).state_dict()) | set(STAGE1_EXTRA_KEYS)
        return set(Blip2ForConditionalGeneration(config).state_dict())
