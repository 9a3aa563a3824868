"""ALBEF checkpoints: ITC / ITM (retrieval, classify, match) and VQA by ranking an answer list.

ALBEF runs on BLIP's pipeline (`BlipPipeline`: same public methods, same preprocessing and settings rules) with
its own model (`mixkit.models.albef.modeling.AlbefModel`) and ALBEF's token rules (LAVIS commit 506965b,
`lavis/models/albef_models/`): its tokenizer is plain bert-base-uncased, so ITM texts and questions keep `[CLS]`
first (`compute_sim_matrix` replaces it only when a tokenizer has `enc_token_id`, which ALBEF's has not) and the
answer decoder starts from `[CLS]` (`albef_vqa.py::rank_answers`: `answer_ids[0, 0]`). Questions are cut at 25
tokens (`albef_vqa.py::from_config`: `max_txt_len` 25, which `albef_vqav2.yaml` does not override). ALBEF has no
answer generation: VQA ranks a given list (`--answers FILE`), LAVIS's only mode for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from mixkit.models.albef.modeling import AlbefModel
from mixkit.models.settings import GenerationSettings
from mixkit.pipelines.blip import BlipPipeline

MAX_QUESTION_LENGTH = 25  # albef_vqa.py::from_config, cfg.get("max_txt_len", 25)


class AlbefPipeline(BlipPipeline):
    family = "albef"
    tasks = ("vqa", "retrieval", "itm", "itc", "classify", "match")
    model_class = AlbefModel

    def start_token_ids(self, tokenizer: PreTrainedTokenizerBase, model: AlbefModel,
                        directory: Path) -> tuple[int, int]:
        """[CLS] for both: ALBEF has no [DEC] / [ENC] (see the module docstring)."""
        vocab = model.config.text_config.vocab_size
        if len(tokenizer) > vocab:
            raise ValueError(f"{directory}: the tokenizer has {len(tokenizer)} tokens, the text model {vocab}")
        if tokenizer.cls_token_id is None:
            raise ValueError(f"{directory}: the tokenizer has no [CLS] token (ALBEF's is bert-base-uncased)")
        return tokenizer.cls_token_id, tokenizer.cls_token_id

    @torch.no_grad()
    def encode_questions(self, image_embeds: torch.Tensor,
                         questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's states over [CLS] question [SEP] reading the image, and the 0/1 mask."""
        tokens = self.tokenizer(list(questions), padding="longest", truncation=True, max_length=MAX_QUESTION_LENGTH,
                                padding_side="right", return_tensors="pt").to(self.device)
        return self.model.multimodal_hidden(image_embeds, tokens.input_ids, tokens.attention_mask), \
            tokens.attention_mask

    def caption(self, *args, **kwargs) -> list[str]:
        raise ValueError("ALBEF has no caption decoder; use a BLIP or BLIP-2 checkpoint for captions")

    def generate_answers(self, image_embeds: torch.Tensor, prompts: Sequence[str],
                         settings: GenerationSettings) -> list[str]:
        raise ValueError("ALBEF answers by ranking an answer list (LAVIS's albef_vqa has no generation): "
                         "give --answers FILE")


__all__ = ["AlbefPipeline", "MAX_QUESTION_LENGTH"]
