"""BLIP: a ViT and one BERT, with the heads a checkpoint carries.

Which heads a checkpoint has follows its `config.json` `architectures`, named as `transformers` names them
(their state-dict layout is the same), plus mixkit's pretraining layout, which holds every head:

| architecture | parts | tasks |
| --- | --- | --- |
| `BlipForConditionalGeneration` | ViT, `text_decoder` | caption |
| `BlipForQuestionAnswering` | ViT, `text_encoder`, `text_decoder` | VQA (generate, rank answers) |
| `BlipForImageTextRetrieval` | ViT, `text_encoder`, `vision_proj`, `text_proj`, `itm_head` (+ `temp`) | ITC, ITM |
| `BlipForPreTraining` (mixkit) | all of the above | ITC + ITM + LM pretraining, captions |

`temp` (the ITC temperature) is LAVIS's; `transformers`' retrieval class has none, so a folder it saved loads
with LAVIS's initial value 0.07 (`temp_from_checkpoint` says which). The ViT is BLIP-2's module
(`mixkit.models.blip2.vision`) with BLIP's full query/key/value bias.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BlipConfig

from mixkit.models.blip.text import TextDecoder, TextModel
from mixkit.models.blip2.vision import VisionTransformer
from mixkit.models.serialization import CheckpointMismatchError, build_and_load, read_weights, save_weights

logger = logging.getLogger(__name__)

# Stored by `transformers` (and LAVIS) under the decoder's own name; here they are the tied originals.
TIED_DUPLICATES = {
    "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
}
TEMP_INIT = 0.07  # LAVIS blip_retrieval.py / blip_pretrain.py: nn.Parameter(0.07 * torch.ones([]))


@dataclass(frozen=True)
class BlipHeads:
    encoder: bool  # text_encoder: ITC text side, ITM, VQA question
    decoder: bool  # text_decoder: captions, answers
    contrastive: bool  # vision_proj, text_proj, itm_head, temp
    tasks: tuple[str, ...]


ARCHITECTURE_HEADS: dict[str, BlipHeads] = {
    "BlipForConditionalGeneration": BlipHeads(False, True, False, ("caption",)),
    "BlipForQuestionAnswering": BlipHeads(True, True, False, ("vqa",)),
    "BlipForImageTextRetrieval": BlipHeads(True, False, True, ("retrieval", "itm", "itc", "classify", "match")),
    "BlipForPreTraining": BlipHeads(True, True, True, ("caption", "retrieval", "itm", "itc", "classify", "match")),
}


def architecture_of(config: BlipConfig, known: dict[str, BlipHeads] = ARCHITECTURE_HEADS) -> str:
    """The architecture a config names (one of `known`: BLIP's by default); a clear error for none or another."""
    names = [name for name in (config.architectures or []) if name in known]
    if not names:
        raise ValueError(f"config.json architectures {config.architectures} name no {config.model_type} head; "
                         f"expected one of {', '.join(known)}")
    return names[0]


class BlipModel(nn.Module):
    """ViT + BERT with the heads of `architecture` (see the module docstring)."""

    # A family built on BLIP's parts (ALBEF, `mixkit.models.albef`) brings its own table, config class and text
    # modules through these three hooks; BLIP's own values are the defaults.
    architecture_heads: dict[str, BlipHeads] = ARCHITECTURE_HEADS
    config_class: type[BlipConfig] = BlipConfig

    def __init__(self, config: BlipConfig, architecture: str):
        super().__init__()
        if architecture not in self.architecture_heads:
            raise ValueError(f"unknown {config.model_type.upper()} architecture {architecture!r}; known: "
                             f"{', '.join(self.architecture_heads)}")
        self.config = config
        self.architecture = architecture
        self.heads = self.architecture_heads[architecture]
        self.vision_model = VisionTransformer(config.vision_config)
        text = config.text_config
        if self.heads.encoder:
            self.text_encoder = self.build_text_encoder(config)
        if self.heads.decoder:
            self.text_decoder = self.build_text_decoder(config)
        if self.heads.contrastive:
            self.vision_proj = nn.Linear(config.vision_config.hidden_size, config.image_text_hidden_size)
            self.text_proj = nn.Linear(text.hidden_size, config.image_text_hidden_size)
            self.itm_head = nn.Linear(text.hidden_size, 2)
            self.temp = nn.Parameter(torch.tensor(TEMP_INIT))
        self.vision_frozen = False
        self.temp_from_checkpoint = True

    def build_text_encoder(self, config: BlipConfig) -> nn.Module:
        return TextModel(config.text_config)

    def build_text_decoder(self, config: BlipConfig) -> nn.Module:
        return TextDecoder(config.text_config)

    # ---------------------------------------------------------------- freezing and training switches

    def lock_image_tower(self) -> None:
        """Freeze the whole ViT (BLIP fine-tunes it in LAVIS's recipes; freezing is for small-memory runs)."""
        self.vision_model.eval()
        for parameter in self.vision_model.parameters():
            parameter.requires_grad_(False)
        self.vision_frozen = True

    def train(self, mode: bool = True) -> BlipModel:
        super().train(mode)
        if self.vision_frozen:
            self.vision_model.eval()
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.vision_model.encoder.gradient_checkpointing = enabled
        for name in ("text_encoder", "text_decoder"):
            if hasattr(self, name):
                text = getattr(self, name)
                (text.bert if name == "text_decoder" else text).gradient_checkpointing = enabled

    def _require(self, part: str, what: str) -> None:
        if not getattr(self.heads, part):
            raise ValueError(f"this {self.architecture} checkpoint has no {part} head, needed for {what}")

    # ---------------------------------------------------------------- outputs

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ViT patch features after the final LayerNorm: [batch, 1 + patches, vision hidden]."""
        return self.vision_model(pixel_values)

    def image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """ITC image embedding: the projected, L2-normalised class token [batch, embed dim]."""
        self._require("contrastive", "image features")
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """ITC text embedding: the projected, L2-normalised [CLS] of the text alone [batch, embed dim]."""
        self._require("contrastive", "text features")
        hidden, _ = self.text_encoder(input_ids, attention_mask)
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """ITC logits [images, texts]: cosine / temp (LAVIS clamps temp to [0.001, 0.5] while training)."""
        return image_feats @ text_feats.t() / self.temp

    def multimodal_hidden(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor) -> torch.Tensor:
        """The text encoder's states with every layer cross-attending to the image [batch, length, hidden]
        (ITM; the VQA question). The caller puts [ENC] first, as LAVIS does."""
        self._require("encoder", "image-grounded text encoding")
        hidden, _ = self.text_encoder(input_ids, attention_mask, source=image_embeds)
        return hidden

    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """Match / no-match logits [batch, 2] from the first position's multimodal state."""
        self._require("contrastive", "ITM")
        return self.itm_head(self.multimodal_hidden(image_embeds, input_ids, attention_mask)[:, 0])

    def decoder_logits(self, source: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal LM logits [batch, length, vocab] over `input_ids` ([DEC] first) reading `source`: the image
        patches (captions) or the encoded question (VQA answers, `source_mask` its padding)."""
        self._require("decoder", "text generation")
        logits, _ = self.text_decoder(input_ids, attention_mask, source, source_mask)
        return logits

    @torch.no_grad()
    def generate(self, source: torch.Tensor, input_ids: torch.Tensor, source_mask: torch.Tensor | None = None,
                 **generation_kwargs: Any) -> torch.Tensor:
        """Token ids after `input_ids` ([DEC] + prompt, unpadded), stopping at [SEP]; `transformers`' search."""
        self._require("decoder", "text generation")
        text = self.config.text_config
        if source_mask is None:
            source_mask = torch.ones(source.shape[:2], dtype=torch.long, device=source.device)
        sequences = self._generator().generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), encoder_hidden_states=source,
            encoder_attention_mask=source_mask, eos_token_id=text.sep_token_id, pad_token_id=text.pad_token_id,
            **generation_kwargs)
        return sequences[:, input_ids.shape[1]:]

    def _generator(self) -> nn.Module:
        from mixkit.models.blip.generation import DecoderGenerator

        generator = self.__dict__.get("_decoder_generator")  # kept outside the module tree: no duplicate weights
        if generator is None or generator.decoder is not self.text_decoder:
            generator = DecoderGenerator(self.text_decoder)
            generator.generation_config.max_length = None  # lengths come from the caller (max_new_tokens)
            self.__dict__["_decoder_generator"] = generator
        return generator

    # ---------------------------------------------------------------- files

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                        base_model: str | None = None) -> Path:
        """`config.json` (naming the architecture) + `model.safetensors`, readable by `transformers` for its
        three architectures (`temp` is an extra key it ignores)."""
        if base_model is not None:
            raise ValueError("BLIP checkpoints are saved whole (its recipes train the ViT too)")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [self.architecture]
        self.config.save_pretrained(directory)
        save_weights(self, directory, state=state_dict)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BlipModel:
        """Build from `config.json` and load `model.safetensors` strictly; parameters built on `meta` become the
        memory-mapped checkpoint tensors. Only `temp` may be missing (`transformers`' retrieval folders)."""
        config = cls.config_class.from_pretrained(directory)
        architecture = architecture_of(config, cls.architecture_heads)
        state = drop_tied_duplicates(read_weights(Path(directory)))
        model = build_and_load(lambda: cls(config, architecture), state, allowed_missing_prefixes=("temp",))
        # Else `build_and_load` gave it the initial value (architectures without ITC have no `temp` at all).
        model.temp_from_checkpoint = "temp" in state or not hasattr(model, "temp")
        if not model.temp_from_checkpoint:
            logger.info("%s: no ITC temperature in the checkpoint; using LAVIS's initial %.2f", directory, TEMP_INIT)
        return model.eval()


def drop_tied_duplicates(state: dict[str, torch.Tensor],
                         duplicates: dict[str, str] = TIED_DUPLICATES) -> dict[str, torch.Tensor]:
    """Remove the stored copies of tied weights (`duplicates`: copy -> original, BLIP's by default) after checking
    they equal their originals (a checkpoint whose copies differ does not fit a tied model: that is an error, not
    a silent choice)."""
    state = dict(state)
    for duplicate, original in duplicates.items():
        if duplicate not in state:
            continue
        value = state.pop(duplicate)
        if original in state and not torch.equal(value, state[original]):
            raise CheckpointMismatchError(f"{duplicate} differs from {original}, to which BLIP ties it")
        state.setdefault(original, value)
    return state


__all__ = ["ARCHITECTURE_HEADS", "BlipHeads", "BlipModel", "architecture_of", "drop_tied_duplicates"]
