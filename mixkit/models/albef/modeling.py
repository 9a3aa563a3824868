"""ALBEF: BLIP's model (`mixkit.models.blip.modeling.BlipModel`) with ALBEF's BERT and heads.

| architecture | parts | tasks |
| --- | --- | --- |
| `AlbefForRetrieval` | ViT, `text_encoder` (text + fusion layers), `vision_proj`, `text_proj`, `itm_head`, `temp` | ITC, ITM |
| `AlbefForPreTraining` | the above + `mlm_head` (BERT's MLM head, output matrix tied to the word embeddings) | + MLM |
| `AlbefForQuestionAnswering` | ViT, `text_encoder`, `text_decoder` (every layer cross-attends to the question) | VQA |

What differs from BLIP (LAVIS commit 506965b, `lavis/models/albef_models/`): ITC text features come from the
text-only layers (`forward_text`, mode "text"); ITM and MLM run the fusion layers; texts keep `[CLS]` first (ALBEF's
tokenizer is plain bert-base-uncased: `AlbefBase.init_tokenizer`, no `[ENC]`/`[DEC]`); the VQA decoder starts from
`[CLS]` (`albef_vqa.py::rank_answers` takes the answers' own first token). The momentum encoders and feature queues
of LAVIS's models are training state and live in `mixkit.train.albef_task`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BlipTextConfig

from mixkit.models.albef.config import AlbefConfig
from mixkit.models.albef.text import FusionTextModel
from mixkit.models.blip.modeling import BlipHeads, BlipModel
from mixkit.models.blip.text import TextDecoder
from mixkit.models.blip2.stage1 import TiedLMHead

_MATCHING = ("retrieval", "itm", "itc", "classify", "match")
ALBEF_ARCHITECTURES: dict[str, BlipHeads] = {
    "AlbefForRetrieval": BlipHeads(True, False, True, _MATCHING),
    "AlbefForPreTraining": BlipHeads(True, False, True, _MATCHING),
    "AlbefForQuestionAnswering": BlipHeads(True, True, False, ("vqa",)),
}
MLM_ARCHITECTURES = ("AlbefForPreTraining",)


def decoder_text_config(config: AlbefConfig) -> BlipTextConfig:
    """The answer decoder's BERT: `decoder_layers` layers, each cross-attending to the question's states."""
    decoder = copy.deepcopy(config.text_config)
    decoder.num_hidden_layers = config.decoder_layers
    decoder.is_decoder = True
    decoder.encoder_hidden_size = config.text_config.hidden_size
    return decoder


class AlbefModel(BlipModel):
    architecture_heads = ALBEF_ARCHITECTURES
    config_class = AlbefConfig

    def __init__(self, config: AlbefConfig, architecture: str):
        super().__init__(config, architecture)
        if architecture in MLM_ARCHITECTURES:
            text = config.text_config
            self.mlm_head = TiedLMHead(text.hidden_size, text.vocab_size, text.hidden_act, text.layer_norm_eps)

    def build_text_encoder(self, config: AlbefConfig) -> nn.Module:
        return FusionTextModel(config.text_config, config.fusion_layer)

    def build_text_decoder(self, config: AlbefConfig) -> nn.Module:
        return TextDecoder(decoder_text_config(config))

    # ---------------------------------------------------------------- ALBEF's own outputs

    def text_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text-only layers' states [batch, length, hidden] (ITC reads [CLS]; ITM fuses them)."""
        return self.text_encoder.text(input_ids, attention_mask)

    def project_text(self, text_states: torch.Tensor) -> torch.Tensor:
        """ITC text features from `text_states`: the projected, L2-normalised [CLS] [batch, embed dim] (what
        `text_features` returns, without running the text layers again)."""
        return F.normalize(self.text_proj(text_states[:, 0]), dim=-1)

    def fused_cls(self, text_states: torch.Tensor, attention_mask: torch.Tensor,
                  image_embeds: torch.Tensor) -> torch.Tensor:
        """The fusion layers' first ([CLS]) state [batch, hidden] of `text_states` reading `image_embeds`."""
        return self.text_encoder.fuse(text_states, attention_mask, image_embeds)[:, 0]

    def mlm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked-token logits [batch, length, vocab] of every layer reading the image (LAVIS "multimodal")."""
        if not hasattr(self, "mlm_head"):
            raise ValueError(f"this {self.architecture} checkpoint has no MLM head (AlbefForPreTraining has one)")
        hidden = self.multimodal_hidden(image_embeds, input_ids, attention_mask)
        return self.mlm_head(hidden, self.text_encoder.embeddings.word_embeddings.weight)

    def generate(self, *args, **kwargs) -> torch.Tensor:
        raise ValueError("ALBEF answers by ranking an answer list (LAVIS's albef_vqa has no generation): "
                         "give --answers FILE")


__all__ = ["ALBEF_ARCHITECTURES", "AlbefModel", "decoder_text_config"]
