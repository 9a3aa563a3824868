"""The stage-1 BLIP-2 model: Q-Former with text blocks, projections, ITM head, temperature and ITG head.

It produces the three stage-1 outputs (ITC similarities, ITM logits, ITG logits) and retrieval scores; the
losses live in `mixkit.train.stage1_task`. Keys follow `transformers`' `Blip2ForImageTextRetrieval`, plus
`temp` and the ITG head `lm_head.*` (whose decoder weight is the word embedding matrix, as in LAVIS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2Config
from transformers.activations import ACT2FN

from mixkit.models.blip2.modeling import Blip2Base, TextEmbeddings
from mixkit.models.blip2.qformer import causal_text_mask, padding_mask


class PredictionTransform(nn.Module):
    def __init__(self, hidden_size: int, activation: str, eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[activation]
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(hidden_states)))


class TiedLMHead(nn.Module):
    """BERT's prediction head; the output matrix is passed in (the tied word embeddings)."""

    def __init__(self, hidden_size: int, vocab_size: int, activation: str, eps: float):
        super().__init__()
        self.transform = PredictionTransform(hidden_size, activation, eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden_states), word_embeddings, self.bias)


@dataclass
class ImageFeatures:
    """One image batch, encoded once and reused by ITC, ITM and ITG."""

    image_embeds: torch.Tensor  # [batch, patches, vision hidden], after ln_vision
    query_output: torch.Tensor  # [batch, queries, qformer hidden]
    query_key_values: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, for ITG
    image_feats: torch.Tensor  # [batch, queries, embed dim], L2-normalised


class Blip2Stage1Model(Blip2Base):
    architecture = "Blip2ForImageTextRetrieval"  # plus `temp` and the ITG head (see the module docstring)

    def __init__(self, config: Blip2Config):
        if not config.qformer_config.use_qformer_text_input:
            raise ValueError("the stage-1 model needs qformer_config.use_qformer_text_input=True (text blocks)")
        super().__init__(config)
        qformer = config.qformer_config
        self.embeddings = TextEmbeddings(
            qformer.vocab_size, qformer.hidden_size, qformer.max_position_embeddings, qformer.pad_token_id
        )
        self.vision_projection = nn.Linear(qformer.hidden_size, config.image_text_hidden_size)
        self.text_projection = nn.Linear(qformer.hidden_size, config.image_text_hidden_size)
        self.itm_head = nn.Linear(qformer.hidden_size, 2)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.lm_head = TiedLMHead(qformer.hidden_size, qformer.vocab_size, qformer.hidden_act, qformer.layer_norm_eps)

    def encode_image_features(self, pixel_values: torch.Tensor) -> ImageFeatures:
        image_embeds = self.encode_image(pixel_values)
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        output = self.qformer(
            queries, query_length=queries.shape[1], image_embeds=image_embeds, return_key_values=True
        )
        image_feats = F.normalize(self.vision_projection(output.last_hidden_state), dim=-1)
        return ImageFeatures(image_embeds, output.last_hidden_state, output.key_values, image_feats)

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text alone through the Q-Former (no queries, no image): [batch, length, hidden]."""
        embeds = self.embeddings(input_ids)
        return self.qformer(embeds, query_length=0, self_mask=padding_mask(attention_mask)).last_hidden_state

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised [CLS] projection: [batch, embed dim]."""
        return F.normalize(self.text_projection(self.text_hidden(input_ids, attention_mask)[:, 0]), dim=-1)

    @staticmethod
    def best_query_cosine(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """[images, texts]: the cosine of the best-matching query (what `transformers` reports for ITC)."""
        return torch.einsum("iqd,td->itq", image_feats, text_feats).max(dim=-1).values

    def similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """ITC logits [images, texts]: best-query cosine divided by the learned temperature (no clamp, as LAVIS)."""
        return self.best_query_cosine(image_feats, text_feats) / self.temp

    def itm_logits(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Match / no-match logits [batch, 2]: queries and text attend to each other freely, queries read
        the image; the head's outputs are averaged over query positions."""
        queries = self.query_tokens.expand(input_ids.shape[0], -1, -1)
        embeds = torch.cat([queries, self.embeddings(input_ids).to(queries.dtype)], dim=1)
        query_mask = torch.ones(queries.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        mask = padding_mask(torch.cat([query_mask, attention_mask], dim=1))
        hidden = self.qformer(
            embeds, query_length=queries.shape[1], self_mask=mask, image_embeds=image_embeds
        ).last_hidden_state
        return self.itm_head(hidden[:, : queries.shape[1]]).mean(dim=1)

    def itg_logits(
        self,
        query_key_values: list[tuple[torch.Tensor, torch.Tensor]],
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Image-grounded generation logits [batch, length, vocab]: each text position sees every query (via
        their cached keys/values) and the text up to itself."""
        return self.itg_head(self.itg_hidden(query_key_values, decoder_input_ids, attention_mask))

    def itg_hidden(
        self,
        query_key_values: list[tuple[torch.Tensor, torch.Tensor]],
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The text positions' last hidden states before the LM head [batch, length, hidden]; training takes the
        head on the labelled positions only (`itg_head`), since padding carries no label."""
        num_queries = query_key_values[0][0].shape[2]
        mask = causal_text_mask(attention_mask, num_queries)
        return self.qformer(
            self.embeddings(decoder_input_ids), query_length=0, self_mask=mask, past_key_values=query_key_values
        ).last_hidden_state

    def itg_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden, self.embeddings.word_embeddings.weight)
