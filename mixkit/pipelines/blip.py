"""BLIP checkpoints for every task their heads allow: caption, VQA (generate or rank a list), ITC / ITM.

Public interface (what `mixkit predict`, `mixkit eval retrieval` and the server call):
- captions: `encode_images`, `generate(image_embeds, prompts, settings)`, `caption(images)`;
- VQA: `encode_questions`, `answer`, `answer_grouped` (each image encoded once), `rank_answers` (LAVIS's VQAv2
  "rank" mode over a given answer list);
- matching (the retrieval protocol `Blip2RetrievalPipeline` also follows): `tokenize`, `text_features`,
  `image_features`, `itc_similarity`, `itm_logits`, `match`, `classify`.

Text is encoded as LAVIS's BLIP code encodes it (lavis/models/blip_models/, commit 506965b): captions are
generated after `[DEC]` + the prompt (LAVIS drops the prompt's final `[SEP]`); questions and ITM texts start with
`[ENC]` in place of `[CLS]` (`transformers`' `BlipForQuestionAnswering` leaves `[CLS]` there, see docs/blip.md);
ITC texts keep `[CLS]`. Settings follow `mixkit.pipelines.settings`: a catalogue checkpoint gets LAVIS's prompt
"a picture of " and lengths, a folder without `mixkit_settings.json` no prompt and `transformers`' defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from mixkit.data.text import clean_question
from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.blip.modeling import BlipModel
from mixkit.models.blip.reference import NUM_ANSWER_CANDIDATES, folder_settings
from mixkit.models.hub import check_checkpoint_dir, resolve_checkpoint
from mixkit.models.settings import GenerationSettings, PredictionSettings
from mixkit.pipelines.blip2 import catalogue_entry_for
from mixkit.pipelines.common import (ImageInput, ImageTextPipeline, ItcClassifier, answer_rows_grouped,
                                     place_model)
from mixkit.pipelines.settings import resolve_prediction_settings

MAX_TEXT_LENGTH = 35  # LAVIS: compute_sim_matrix tokenizes retrieval texts to 35; blip_vqa's max_txt_len is 35
ENC_TOKEN = "[ENC]"
# LAVIS's BertLMHeadModel computes every decoder loss with label smoothing 0.1, the answer ranking's too
# (lavis/models/med.py, `CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)`).
RANK_LABEL_SMOOTHING = 0.1


@dataclass
class BlipImageFeatures:
    image_embeds: torch.Tensor  # [batch, 1 + patches, vision hidden] (ITM reads them)
    image_feats: torch.Tensor  # [batch, embed dim], L2-normalised (ITC)


def special_token_ids(tokenizer: PreTrainedTokenizerBase, model: BlipModel, directory: Path) -> tuple[int, int]:
    """([DEC], [ENC]) ids; each must be the tokenizer's and fit the model's vocabulary (LAVIS adds `[DEC]` as
    bos and `[ENC]` as an additional special token to bert-base-uncased: blip.py `init_tokenizer`)."""
    vocab = model.config.text_config.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(f"{directory}: the tokenizer has {len(tokenizer)} tokens, the text model {vocab}")
    bos = model.config.text_config.bos_token_id
    if tokenizer.bos_token_id != bos:
        raise ValueError(f"{directory}: the tokenizer's bos ({tokenizer.bos_token!r}, id {tokenizer.bos_token_id}) "
                         f"is not text_config.bos_token_id {bos} ([DEC])")
    enc = tokenizer.convert_tokens_to_ids(ENC_TOKEN)
    if enc is None or enc == tokenizer.unk_token_id:
        raise ValueError(f"{directory}: the tokenizer has no {ENC_TOKEN} token (BLIP encodes questions and ITM "
                         "texts with it first)")
    return bos, enc


class BlipPipeline(ItcClassifier, ImageTextPipeline):
    """A BLIP checkpoint (any of its architectures), its BERT tokenizer, image preprocessing and settings
    (`caption`, `classify`, `save_pretrained`: the shared ones of `mixkit.pipelines.common`)."""

    family = "blip"
    tasks = ("caption", "vqa", "retrieval", "itm", "itc", "classify", "match")
    model_class: type[BlipModel] = BlipModel  # ALBEF (`mixkit.pipelines.albef`) runs this pipeline on its model

    def __init__(self, model: BlipModel, tokenizer: PreTrainedTokenizerBase, image_config: ImageProcessorConfig,
                 settings: PredictionSettings, device: torch.device | str = "cpu", directory: Path = Path(".")):
        super().__init__(model, tokenizer, image_config, settings, device)
        self.bos_token_id, self.enc_token_id = self.start_token_ids(tokenizer, model, directory)

    def start_token_ids(self, tokenizer: PreTrainedTokenizerBase, model: BlipModel,
                        directory: Path) -> tuple[int, int]:
        """(the decoder's first token, the token put first in ITM texts and questions): BLIP's [DEC], [ENC]."""
        return special_token_ids(tokenizer, model, directory)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, device: str | None = None, fp32: bool = True) -> BlipPipeline:
        """A catalogue name or a checkpoint folder (mixkit- or `transformers`-saved). BLIP runs in fp32 (`fp32`
        is accepted so every pipeline loads with the same options)."""
        directory = resolve_checkpoint(str(name_or_dir))
        if not check_checkpoint_dir(directory).tokenizer:
            raise FileNotFoundError(f"{directory}: no tokenizer files (BLIP's BERT tokenizer with [DEC] and [ENC])")
        entry = catalogue_entry_for(str(name_or_dir), directory)
        model = cls.model_class.from_pretrained(directory)
        if model.heads.decoder:
            settings = resolve_prediction_settings(directory, entry, folder_settings)
        else:
            settings = folder_settings()  # nothing to generate with; kept so every pipeline has settings
        target = place_model(model, device)
        # The model's config given: `transformers` would otherwise read config.json again (and warn on ALBEF's).
        tokenizer = AutoTokenizer.from_pretrained(str(directory), config=model.config)
        return cls(model, tokenizer, ImageProcessorConfig.load(directory), settings, target, directory)

    # ---------------------------------------------------------------- text

    def tokenize(self, texts: Sequence[str], first_token: int | None = None) -> BatchEncoding:
        """[CLS] text [SEP], right-padded to the longest, at most 35 tokens, on the CPU; `first_token` replaces
        [CLS] ([ENC] for ITM and questions, as LAVIS)."""
        tokens = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=MAX_TEXT_LENGTH,
                                padding_side="right", return_tensors="pt")
        if first_token is not None:
            tokens["input_ids"][:, 0] = first_token
        return tokens

    def prompt_ids(self, prompt: str, rows: int) -> torch.Tensor:
        """[DEC] + the prompt's tokens (no [CLS], no [SEP]): what LAVIS's blip_caption.generate starts from."""
        ids = [self.bos_token_id] + self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return torch.tensor([ids] * rows, device=self.device)

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---------------------------------------------------------------- captions

    @torch.no_grad()
    def generate(self, image_embeds: torch.Tensor, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:
        """One text per (image embedding, prompt) row, without the prompt. Rows are grouped by prompt, so
        prompts of different lengths never need padding."""
        texts: list[str | None] = [None] * len(prompts)
        for prompt in dict.fromkeys(prompts):
            rows = [index for index, text in enumerate(prompts) if text == prompt]
            ids = self.model.generate(image_embeds[rows], self.prompt_ids(prompt, len(rows)),
                                      **settings.generate_kwargs())
            for row, text in zip(rows, self.decode(ids)):
                texts[row] = text
        return [text or "" for text in texts]

    # ---------------------------------------------------------------- VQA

    def vqa_prompt(self, question: str, template: str | None = None) -> str:
        """The question as BLIP reads it: LAVIS's question cleaning, inside `template` when one is given."""
        template = template or self.settings.vqa_prompt  # "" means none, as for captions
        return template.format(clean_question(question))

    @torch.no_grad()
    def encode_questions(self, image_embeds: torch.Tensor, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The question states [rows, length, hidden] ([ENC] first, reading the image) and their 0/1 mask."""
        tokens = self.tokenize(questions, first_token=self.enc_token_id).to(self.device)
        return self.model.multimodal_hidden(image_embeds, tokens.input_ids, tokens.attention_mask), \
            tokens.attention_mask

    @torch.no_grad()
    def generate_answers(self, image_embeds: torch.Tensor, prompts: Sequence[str],
                         settings: GenerationSettings) -> list[str]:
        """One answer per (image embedding, question prompt) row, generated from [DEC]. The decoder reads the
        question with its padding masked (LAVIS and `transformers` pass an all-ones mask, which lets a padded
        question's answer depend on its batch-mates)."""
        states, mask = self.encode_questions(image_embeds, prompts)
        start = torch.full((len(prompts), 1), self.bos_token_id, device=self.device)
        return self.decode(self.model.generate(states, start, source_mask=mask, **settings.generate_kwargs()))

    def answer(self, images: Sequence[ImageInput], questions: Sequence[str],
               settings: GenerationSettings | None = None, batch_size: int = 8,
               prompt_template: str | None = None) -> list[str]:
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        return [group[0] for group in self.answer_grouped(images, [[q] for q in questions], settings, batch_size,
                                                          prompt_template, batch_size)]

    def answer_grouped(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                       settings: GenerationSettings | None = None, question_batch: int = 8,
                       prompt_template: str | None = None, image_batch: int | None = None) -> list[list[str]]:
        """Every question about each image (`questions[i]` about `images[i]`), each image encoded once."""
        settings = settings or self.settings.vqa
        return answer_rows_grouped(images, self._vqa_prompts(questions, prompt_template), self.encode_images,
                                   lambda embeds, prompts: self.generate_answers(embeds, prompts, settings),
                                   question_batch, image_batch)

    def rank_answers(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                     answer_list: Sequence[str], question_batch: int = 8, image_batch: int | None = None,
                     num_candidates: int = NUM_ANSWER_CANDIDATES) -> list[list[str]]:
        """LAVIS's VQAv2 "rank" mode: per question, the `num_candidates` answers whose first token is likeliest
        after [DEC], then the one with the highest summed log-likelihood (label smoothing 0.1, as LAVIS)."""
        if not answer_list or any(not answer.strip() for answer in answer_list):
            raise ValueError("--answers: give one or more non-empty answers")
        answer_tokens = self.tokenize(answer_list, first_token=self.bos_token_id).to(self.device)
        k = min(num_candidates, len(answer_list))
        return answer_rows_grouped(
            images, self._vqa_prompts(questions, None), self.encode_images,
            lambda embeds, prompts: [answer_list[i] for i in self._best_answers(embeds, prompts, answer_tokens, k)],
            question_batch, image_batch)

    def _vqa_prompts(self, questions: Sequence[Sequence[str]], template: str | None) -> list[list[str]]:
        return [[self.vqa_prompt(question, template) for question in asked] for asked in questions]

    @torch.no_grad()
    def _best_answers(self, image_embeds: torch.Tensor, prompts: Sequence[str], answers: BatchEncoding,
                      k: int) -> list[int]:
        states, mask = self.encode_questions(image_embeds, prompts)
        rows = len(prompts)
        start = torch.full((rows, 1), self.bos_token_id, device=self.device)
        first = self.model.decoder_logits(states, start, torch.ones_like(start), mask)[:, 0].softmax(-1)
        candidates = first.index_select(1, answers.input_ids[:, 1]).topk(k, dim=1).indices  # [rows, k]
        ids, answer_mask = answers.input_ids[candidates.flatten()], answers.attention_mask[candidates.flatten()]
        logits = self.model.decoder_logits(states.repeat_interleave(k, 0), ids, answer_mask,
                                           mask.repeat_interleave(k, 0))
        labels = ids.masked_fill(answer_mask == 0, -100)[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                 ignore_index=-100, label_smoothing=RANK_LABEL_SMOOTHING, reduction="none")
        log_likelihood = -losses.view(rows, k, -1).sum(-1)
        return candidates.gather(1, log_likelihood.argmax(1, keepdim=True)).squeeze(1).tolist()

    # ---------------------------------------------------------------- ITC / ITM

    @torch.no_grad()
    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised [CLS] projections [texts, embed dim] (ids from `tokenize`, [CLS] first)."""
        return self.model.text_features(input_ids.to(self.device), attention_mask.to(self.device))

    @torch.no_grad()
    def image_features(self, images: Sequence[ImageInput]) -> BlipImageFeatures:
        embeds = self.encode_images(images)
        return BlipImageFeatures(embeds, self.model.image_features(embeds))

    def itc_similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """[images, texts] cosine, no temperature (how LAVIS ranks)."""
        return image_feats @ text_feats.t()

    @torch.no_grad()
    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """The "match" logit of each (image, text) row, [ENC] put first as LAVIS does; fp32 on the CPU."""
        ids = input_ids.clone().to(self.device)
        ids[:, 0] = self.enc_token_id
        logits = self.model.itm_logits(image_embeds.to(self.device), ids, attention_mask.to(self.device))
        return logits[:, 1].float().cpu()

    @torch.no_grad()
    def match(self, images: Sequence[ImageInput], texts: Sequence[str]) -> dict[str, list[float]]:
        """For aligned (image, text) pairs: ITM match probability and ITC cosine."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        features, tokens = self.image_features(images), self.tokenize(texts)
        cosine = (features.image_feats * self.text_features(tokens.input_ids, tokens.attention_mask)).sum(-1)
        ids = tokens.input_ids.clone().to(self.device)
        ids[:, 0] = self.enc_token_id
        logits = self.model.itm_logits(features.image_embeds, ids, tokens.attention_mask.to(self.device))
        return {"itm": logits.softmax(-1)[:, 1].float().cpu().tolist(), "itc": cosine.float().cpu().tolist()}


__all__ = ["BlipImageFeatures", "BlipPipeline", "MAX_TEXT_LENGTH", "special_token_ids"]
