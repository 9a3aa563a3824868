"""Convert LAVIS InstructBLIP `.pth` checkpoints into the `transformers` (`InstructBlipForConditionalGeneration`)
layout, declaratively, with BLIP-2's converter parts (`mixkit.models.blip2.convert_lavis`): renames, drops with
their reasons, the EVA ViT transforms, and a strict key check that lists every leftover.

LAVIS facts this relies on (commit 506965b, `lavis/models/blip2_models/blip2_{vicuna,t5}_instruct.py`):
- the Q-Former keeps its word/position embeddings and every layer's text `intermediate`/`output` (instruction
  input, `qformer_text_input=True`); only `Qformer.cls` is set to None;
- the projection is `llm_proj` (Vicuna) or `t5_proj` (Flan-T5); the LLM is `llm_model` / `t5_model`;
- the published `instruct_blip_*_trimmed.pth` files hold only what was trained (the runner drops frozen
  parameters): Q-Former, `query_tokens`, `ln_vision`, projection. The ViT comes from `eva_vit_g.pth` (mounted as
  `visual_encoder.`) and the LLM from its own folder; `check_against(..., provided_elsewhere=...)` names them.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mixkit.models.blip2.convert_lavis import RENAMES as BLIP2_RENAMES
from mixkit.models.blip2.convert_lavis import ConversionError, ConversionReport, Drop, Rename, apply_rules
from mixkit.models.blip2.lavis_options import KINDS

LANGUAGE_MODELS = ("vicuna", "t5")
_QF = r"^Qformer\.bert\.encoder\.layer\.(\d+)\."
_QF_OUT = r"qformer.encoder.layer.\1."

# First matching rule wins: InstructBLIP's own rules, then BLIP-2's rules for the parts every BLIP-2 kind shares
# (EVA ViT, ln_vision, query_tokens, the Q-Former's attention and query feed-forward blocks).
RENAMES: tuple[Rename, ...] = (
    Rename(_QF + r"(intermediate|output)\.", _QF_OUT + r"\2."),  # the instruction's feed-forward blocks
    Rename(r"^Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.embeddings.layernorm."),
    Rename(r"^Qformer\.bert\.embeddings\.(word|position)_embeddings\.", r"qformer.embeddings.\1_embeddings."),
    Rename(r"^(llm|t5)_proj\.", "language_projection."),
    Rename(r"^(llm|t5)_model\.", "language_model."),
    *(rule for rule in BLIP2_RENAMES if rule.kinds == KINDS),
)
DROPS: tuple[Drop, ...] = (
    Drop(r"^Qformer\.bert\.embeddings\.position_ids$",
         "persistent arange buffer in LAVIS BertEmbeddings; transformers rebuilds it as a non-persistent buffer"),
)


def convert_instructblip_state_dict(lavis_sd: Mapping[str, Tensor], language_model: str) -> ConversionReport:
    """Map a LAVIS `Blip2VicunaInstruct` / `Blip2T5Instruct` state dict onto `transformers`' keys; every LAVIS key
    ends up converted, dropped with a reason, or listed in `unmapped`."""
    if language_model not in LANGUAGE_MODELS:
        raise ConversionError(f"language_model must be one of {LANGUAGE_MODELS}, got {language_model!r}")
    projection = "t5_proj." if language_model == "t5" else "llm_proj."
    other = "llm_proj." if language_model == "t5" else "t5_proj."
    if any(key.startswith(other) for key in lavis_sd) and not any(key.startswith(projection) for key in lavis_sd):
        raise ConversionError(f"this checkpoint has {other[:-1]}, not {projection[:-1]}: it is not a "
                              f"{language_model} InstructBLIP")
    report = ConversionReport(kind=language_model, state_dict={})  # type: ignore[arg-type]
    return apply_rules(lavis_sd, report, RENAMES, DROPS)

