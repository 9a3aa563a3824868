"""Convert LAVIS ALBEF `.pth` checkpoints (retrieval, pretrain, VQA) into mixkit's ALBEF layout.

Declarative, with BLIP's machinery (`mixkit.models.blip.convert_lavis`): ordered regex renames, deliberate drops
each with a reason, tied copies checked equal, then a strict load naming every missing or unexpected key. LAVIS
itself (`AlbefBase.load_from_pretrained`) deletes every key whose shape differs from the model's and loads with
`strict=False`; here a mismatch is an error. Facts (LAVIS commit 506965b):
- the ViT is LAVIS's `lavis/models/vit.py` (BLIP's): BLIP's ViT renames apply unchanged;
- `albef_retrieval.py`'s text encoder is an `XBertEncoder` (a BERT without `bert.`); `albef_pretrain.py`'s is a
  `BertForMaskedLM` (`text_encoder.bert.*` + the MLM head `text_encoder.cls.predictions.*`), whose `bert.` LAVIS
  strips on load (`rename_text_keys`); `albef_vqa.py` adds `text_decoder` (`BertLMHeadModel`: `bert.*`, `cls.*`);
- momentum copies (`*_m`), feature queues (`image_queue`, `text_queue`, `idx_queue`, `queue_ptr`) and the BERT's
  persistent `embeddings.position_ids` are in the files and are training state or derived;
- the MLM and decoder heads' output matrices are tied to their word embeddings; the files hold both copies.
Loading a pretrain file into a VQA model (LAVIS copies the encoder's fusion layers into the decoder,
`AlbefVQA.load_from_pretrained`) is a fine-tuning initialisation, not a conversion, and is not done here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mixkit.models.albef.config import AlbefConfig
from mixkit.models.albef.modeling import MLM_ARCHITECTURES, AlbefModel
from mixkit.models.blip.convert_lavis import (DROPS as BLIP_DROPS, KEEP_NAMES, RENAMES as BLIP_RENAMES,
                                              ConversionError, Drop, Rename, convert_lavis_state, read_lavis_file)
from mixkit.models.blip.modeling import TIED_DUPLICATES as BLIP_DECODER_TIES
from mixkit.models.serialization import load_weights_strict

VISION_RENAMES = tuple(rule for rule in BLIP_RENAMES if rule.pattern.startswith(r"^visual_encoder\."))
RENAMES: tuple[Rename, ...] = (
    *VISION_RENAMES,
    Rename(r"^text_encoder\.bert\.(.*)$", r"text_encoder.\1"),  # BertForMaskedLM (pretrain) -> the bare BERT
    Rename(r"^text_encoder\.cls\.predictions\.(.*)$", r"mlm_head.\1"),
    KEEP_NAMES,
)
# BLIP's: momentum copies (`mixkit.train.albef_task` rebuilds them for training), feature queues, position ids.
COMMON_DROPS: tuple[Drop, ...] = BLIP_DROPS
MLM_DROP = Drop(r"^text_encoder\.cls\.", "the MLM head: only AlbefForPreTraining has it")
TIED_DUPLICATES = {
    **BLIP_DECODER_TIES,  # the VQA decoder's output matrix and bias (same names as BLIP's decoder)
    "mlm_head.decoder.weight": "text_encoder.embeddings.word_embeddings.weight",
    "mlm_head.decoder.bias": "mlm_head.bias",
}


def drops_for(architecture: str) -> tuple[Drop, ...]:
    return COMMON_DROPS if architecture in MLM_ARCHITECTURES else (*COMMON_DROPS, MLM_DROP)


def convert_lavis_albef_state(lavis_state: Mapping[str, torch.Tensor],
                              architecture: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(mixkit state dict for `architecture`, the LAVIS keys dropped on purpose); an unknown key raises."""
    return convert_lavis_state(lavis_state, RENAMES, drops_for(architecture), TIED_DUPLICATES)


def convert_lavis_albef(lavis_state: Mapping[str, torch.Tensor], config: AlbefConfig,
                        architecture: str) -> AlbefModel:
    """An `AlbefModel` of `architecture` holding the LAVIS weights, loaded strictly (`CheckpointMismatchError`
    names every missing, unexpected or misshapen key). `config` describes the LAVIS model (ViT eps 1e-6, 12 BERT
    layers fusing from 6: `lavis/configs/models/med_config_albef.json`)."""
    state, _ = convert_lavis_albef_state(lavis_state, architecture)
    model = AlbefModel(config, architecture)
    _check_shapes(model, state)
    load_weights_strict(model, state)
    return model.eval()


def _check_shapes(model: AlbefModel, state: Mapping[str, torch.Tensor]) -> None:
    """LAVIS drops misshapen keys silently (e.g. a 224 px position table into a 384 px model); name them."""
    own = model.state_dict()
    wrong = [f"{key} {tuple(value.shape)} (model {tuple(own[key].shape)})" for key, value in state.items()
             if key in own and own[key].shape != value.shape]
    if wrong:
        raise ConversionError(f"{len(wrong)} LAVIS tensors do not fit the config: {'; '.join(wrong[:10])}")


__all__ = ["COMMON_DROPS", "RENAMES", "TIED_DUPLICATES", "convert_lavis_albef", "convert_lavis_albef_state",
           "read_lavis_file"]
