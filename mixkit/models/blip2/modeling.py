"""BLIP-2 with a frozen language model: image encoder -> Q-Former queries -> projection -> LLM.

Key names follow `transformers`' `Blip2ForConditionalGeneration`, so Hub folders load unchanged. Unlike
`transformers` 5.x, text inputs carry no `<image>` placeholder tokens: the projected queries are placed in
front of the text embeddings here, so callers never depend on a tokenizer convention.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, Blip2Config
from transformers.cache_utils import Cache

from mixkit.models.blip2.qformer import QFormer, padding_mask
from mixkit.models.blip2.vision import VisionTransformer
from mixkit.models.kv_cache import PreallocatedCache
from mixkit.models.serialization import build_and_load, read_weights, save_weights


def _freeze(module: nn.Module) -> None:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def _unfreeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(True)


ModelT = TypeVar("ModelT", bound="Blip2Base")
BASE_MODEL_NAME = "mixkit_base.json"


def read_weights_with_base(directory: Path) -> dict[str, torch.Tensor]:
    """The folder's weights, on top of its base model's when it names one (trainable-only checkpoints)."""
    base_file = directory / BASE_MODEL_NAME
    own = read_weights(directory)
    if not base_file.is_file():
        return own
    from mixkit.models.hub import resolve_checkpoint

    base = json.loads(base_file.read_text())["base_model"]
    state = read_weights_with_base(resolve_checkpoint(base))
    state.update(own)
    return state


def write_base_model_note(directory: Path, base_model: str | Path | None) -> None:
    """`mixkit_base.json` naming the folder or catalogue name the missing (frozen) weights come from; without a
    base model, a stale note is removed (the folder is complete)."""
    base_file = directory / BASE_MODEL_NAME
    if base_model is not None:
        base_file.write_text(json.dumps({"base_model": str(base_model)}, indent=2) + "\n")
    elif base_file.exists():
        base_file.unlink()


class Blip2Base(nn.Module):
    """The image side shared by every BLIP-2 model: ViT, learned queries and the Q-Former."""

    config: Blip2Config
    # What `config.json` names as the architecture: the `transformers` class with the same weight layout.
    architecture = "Blip2ForConditionalGeneration"
    # Families built on these parts (InstructBLIP) name their own config class and Q-Former.
    config_class: type = Blip2Config
    qformer_class: type[QFormer] = QFormer

    def __init__(self, config: Blip2Config):
        super().__init__()
        self.config = config
        self.vision_model = VisionTransformer(config.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.qformer = self.qformer_class(config.qformer_config)
        self.vision_frozen = False

    def lock_image_tower(self) -> None:
        """Freeze the ViT blocks. BLIP-2's `ln_vision` (our `post_layernorm`) stays trainable, as in LAVIS."""
        _freeze(self.vision_model.embeddings)
        _freeze(self.vision_model.encoder)
        self.vision_frozen = True

    def unlock_image_tower(self) -> None:
        """Caption fine-tuning trains the ViT too."""
        _unfreeze(self.vision_model)
        self.vision_frozen = False

    def train(self, mode: bool = True) -> Blip2Base:
        super().train(mode)
        if self.vision_frozen:  # frozen towers never run dropout or update norms
            self.vision_model.embeddings.eval()
            self.vision_model.encoder.eval()
        return self

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch features after `ln_vision`: [batch, 1 + patches, vision hidden]."""
        return self.vision_model(pixel_values)

    def query_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """The queries after reading the image: [batch, num_query_tokens, qformer hidden]."""
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        return self.qformer(queries, query_length=queries.shape[1], image_embeds=image_embeds).last_hidden_state

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.vision_model.encoder.gradient_checkpointing = enabled
        self.qformer.gradient_checkpointing = enabled

    def save_pretrained(self, directory: str | Path, base_model: str | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """`config.json` + `model.safetensors`, readable by `transformers` (same keys and config).

        With `base_model` (a catalogue name or folder holding the frozen weights), only the trainable
        weights are written and `mixkit_base.json` names where the rest comes from: a stage-2 checkpoint
        is then megabytes instead of gigabytes, and `from_pretrained` still loads it whole.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [self.architecture]
        self.config.save_pretrained(directory)
        save_weights(self, directory, only_trainable=base_model is not None, state=state_dict)
        write_base_model_note(directory, base_model)
        return directory

    @classmethod
    def from_pretrained(
        cls: type[ModelT], directory: str | Path, allowed_missing_prefixes: tuple[str, ...] = ()
    ) -> ModelT:
        """Build from `config.json` and load `model.safetensors` strictly (a `transformers`-saved folder too).
        A trainable-only folder first takes every weight from the base model it names.

        The parameters are built on `meta` and then become the memory-mapped checkpoint tensors: no random
        initialisation to throw away, one copy in memory. Only weights allowed to be missing get initialised."""
        config = cls.config_class.from_pretrained(directory)
        return build_and_load(lambda: cls(config), read_weights_with_base(Path(directory)), allowed_missing_prefixes)


@dataclass
class Blip2LanguageInputs:
    """What the language model sees: embeddings and mask ([queries; text] for decoder-only models, the
    encoder side for encoder-decoder ones)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class Blip2Output:
    logits: torch.Tensor
    # Decoder-only: logits cover [queries; text]; this many leading positions are the queries.
    num_query_positions: int


class Blip2Model(Blip2Base):
    """BLIP-2 with a decoder-only (OPT, any causal LM) or encoder-decoder (Flan-T5, any seq2seq) LLM."""

    # Keyword inputs besides the image that `query_features` reads (InstructBLIP: the instruction's Q-Former
    # tokens). `forward` passes its extra keywords on to it; `generate` takes these out of its generation keywords.
    query_input_names: tuple[str, ...] = ()

    def __init__(self, config: Blip2Config):
        super().__init__(config)
        self.language_projection = nn.Linear(config.qformer_config.hidden_size, config.text_config.hidden_size)
        if config.use_decoder_only_language_model:
            self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        else:
            self.language_model = AutoModelForSeq2SeqLM.from_config(config.text_config)
        self.language_frozen = False
        self.language_dropout = True  # while frozen: whether the LLM's dropout follows train() (LAVIS) or stays off

    @property
    def is_encoder_decoder(self) -> bool:
        return not self.config.use_decoder_only_language_model

    def lock_language_model(self, keep_dropout: bool = True) -> None:
        """Freeze the LLM's weights. With `keep_dropout` (LAVIS's behaviour: it only sets `requires_grad=False`
        on the OPT / Flan-T5) the LLM's dropout follows `train()`, so it is active while training stage 2 and
        caption fine-tuning, as in the runs that made the published checkpoints; without it the frozen LLM stays
        in eval mode (a deterministic LLM). Evaluation and prediction call `eval()`: no dropout either way."""
        _freeze(self.language_model)
        self.language_frozen = True
        self.language_dropout = keep_dropout

    def lock_frozen_parts(self, keep_language_dropout: bool = True) -> None:
        """The BLIP-2 stage-2 setting: ViT and LLM frozen; Q-Former, queries, ln_vision, projection train."""
        self.lock_image_tower()
        self.lock_language_model(keep_language_dropout)

    def train(self, mode: bool = True) -> Blip2Model:
        super().train(mode)
        if self.language_frozen and not self.language_dropout:
            self.language_model.eval()
        return self

    def set_inference_dtypes(self, vision_dtype: torch.dtype, language_dtype: torch.dtype) -> None:
        """The reference dtype policy: the frozen ViT trunk and LLM may run in half precision; the Q-Former,
        queries, ln_vision and projection stay fp32 (half-precision Q-Formers lose accuracy)."""
        self.vision_model.embeddings.to(vision_dtype)
        self.vision_model.encoder.to(vision_dtype)
        self.language_model.to(language_dtype)

    def project_queries(self, image_embeds: torch.Tensor, **query_inputs: torch.Tensor) -> torch.Tensor:
        """Query outputs mapped into the LLM's embedding space, in the LLM's dtype."""
        projected = self.language_projection(self.query_features(image_embeds, **query_inputs))
        return projected.to(self.language_model.get_input_embeddings().weight.dtype)

    def language_inputs(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **query_inputs: torch.Tensor,
    ) -> Blip2LanguageInputs:
        """[projected queries; text embeddings] and the matching mask."""
        return self.join_queries_and_text(self.project_queries(image_embeds, **query_inputs), input_ids,
                                          attention_mask)

    def join_queries_and_text(self, queries: torch.Tensor, input_ids: torch.Tensor,
                              attention_mask: torch.Tensor | None = None) -> Blip2LanguageInputs:
        """Projected queries in front of the text's embeddings, with the matching mask."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.language_model.get_input_embeddings()(input_ids)
        query_mask = torch.ones(queries.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        return Blip2LanguageInputs(torch.cat([queries, text], dim=1), torch.cat([query_mask, attention_mask], dim=1))

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        **query_inputs: torch.Tensor,
    ) -> Blip2Output:
        """Next-token logits. Decoder-only: over [queries; input_ids]. Encoder-decoder: `input_ids` is the
        encoder text (prompt), logits are over `decoder_input_ids`. `query_inputs`: see `query_input_names`."""
        if image_embeds is None:
            image_embeds = self.encode_image(pixel_values)
        inputs = self.language_inputs(image_embeds, input_ids, attention_mask, **query_inputs)
        return self.language_model_output(inputs, decoder_input_ids, decoder_attention_mask)

    def language_model_output(self, inputs: Blip2LanguageInputs, decoder_input_ids: torch.Tensor | None = None,
                              decoder_attention_mask: torch.Tensor | None = None) -> Blip2Output:
        """The LLM's logits on prepared inputs (the shared half of `forward`, for families that build the
        queries differently)."""
        if self.is_encoder_decoder:
            outputs = self.language_model(
                inputs_embeds=inputs.inputs_embeds,
                attention_mask=inputs.attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
            )
            return Blip2Output(outputs.logits, 0)
        outputs = self.language_model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask)
        return Blip2Output(outputs.logits, self.config.num_query_tokens)

    @property
    def has_plain_output_head(self) -> bool:
        """Whether the LLM's logits are exactly `output head(base model's last hidden state)`, so the head may
        run on chosen positions only (OPT and Llama: no logit scaling or soft-capping after the head)."""
        return type(self.language_model).__name__ in PLAIN_HEAD_LANGUAGE_MODELS

    def decoder_hidden_states(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                              attention_mask: torch.Tensor) -> Blip2Output:
        """Decoder-only LLM: the last hidden states over [queries; input_ids] (in `Blip2Output.logits`' place),
        before the output head. Training takes the head on the labelled positions only (`output_logits`): the
        32 query positions and the padding never carry a label, and the head is the step's largest matmul."""
        inputs = self.language_inputs(self.encode_image(pixel_values), input_ids, attention_mask)
        outputs = self.language_model.base_model(inputs_embeds=inputs.inputs_embeds,
                                                 attention_mask=inputs.attention_mask)
        return Blip2Output(outputs.last_hidden_state, self.config.num_query_tokens)

    def output_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_output_embeddings()(hidden_states)

    def default_generation_kwargs(self) -> dict[str, Any]:
        """Stop and pad ids from the checkpoint's config (OPT checkpoints stop on the "\\n" token)."""
        text_config = self.config.text_config
        kwargs: dict[str, Any] = {"eos_token_id": text_config.eos_token_id, "pad_token_id": text_config.pad_token_id}
        if self.is_encoder_decoder:
            kwargs["decoder_start_token_id"] = text_config.decoder_start_token_id
        return kwargs

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        image_embeds: torch.Tensor | None = None,
        share_prefill: bool = True,
        **generation_kwargs: Any,
    ) -> torch.Tensor:
        """Generated token ids, new tokens only (no prompt, no decoder start token), right-padded.

        Decoder-only prompts must be left-padded (`input_ids` default: the LLM's bos alone);
        encoder-decoder prompts may be padded either way (default: empty prompt). With beams, a decoder-only
        model runs the shared prefix once per row instead of once per beam (`share_prefill`; the encoder of an
        encoder-decoder model already runs once per row inside `generate`). The keywords named in
        `query_input_names` go to the Q-Former, the others to the LLM's `generate`.
        """
        query_inputs = {name: generation_kwargs.pop(name) for name in self.query_input_names
                        if name in generation_kwargs}
        if image_embeds is None:
            image_embeds = self.encode_image(pixel_values)
        input_ids, attention_mask = self.prompt_or_default(input_ids, attention_mask, image_embeds)
        inputs = self.language_inputs(image_embeds, input_ids, attention_mask, **query_inputs)
        return self.generate_from_inputs(inputs, share_prefill=share_prefill, **generation_kwargs)

    def prompt_or_default(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                          image_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt as given, or the default one (the LLM's bos alone; empty for encoder-decoder models)."""
        if input_ids is not None:
            return input_ids, attention_mask
        input_ids = self._empty_prompt(image_embeds.shape[0], image_embeds.device)
        return input_ids, torch.ones_like(input_ids)

    @torch.no_grad()
    def generate_from_inputs(self, inputs: Blip2LanguageInputs, *, share_prefill: bool = True,
                             **generation_kwargs: Any) -> torch.Tensor:
        """The LLM half of `generate` on prepared [queries; prompt] inputs (same return convention)."""
        kwargs = {**self.default_generation_kwargs(), **generation_kwargs}
        if self.is_encoder_decoder:
            sequences = self.language_model.generate(
                inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, **kwargs
            )
            return sequences[:, 1:]  # drop the decoder start token
        embeds, mask = move_padding_left(inputs.inputs_embeds, inputs.attention_mask)
        _penalise_new_tokens_per_row(kwargs)
        cache_keyword = _cache_keyword(self.language_model)
        if "cache_implementation" in kwargs or cache_keyword in kwargs:
            return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        layers = self.language_model.config.get_text_config().num_hidden_layers
        planned = _planned_length(embeds.shape[1], kwargs)
        beams = kwargs.get("num_beams", 1) if share_prefill else 1
        cache, attention = self._generation_cache(layers, planned, embeds.shape[1], beams)
        with attention:
            if beams > 1:
                self._shared_prefill(embeds, mask, beams, cache)
            kwargs[cache_keyword] = cache
            return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)

    def _generation_cache(self, layers: int, planned: int, prompt_length: int,
                          beams: int) -> tuple[Cache, contextlib.AbstractContextManager]:
        """The cache for one generation and the attention context it needs: beams of a decoder-only LLM with a
        known attention layout attend to one copy of each row's prefix (`mixkit.models.shared_prefix`); anything
        else writes into a `PreallocatedCache`."""
        if beams > 1:
            # Imported here: it imports transformers' masking utilities (and torch._dynamo), which only
            # generation needs.
            from mixkit.models.shared_prefix import SharedPrefixCache, generating_with, supports_shared_prefix

            if supports_shared_prefix(self.language_model):
                cache = SharedPrefixCache(layers, planned - prompt_length + 1)
                return cache, generating_with(self.language_model, cache)
        return PreallocatedCache(layers, planned), contextlib.nullcontext()

    def _shared_prefill(self, embeds: torch.Tensor, mask: torch.Tensor, num_beams: int, cache: Cache) -> Cache:
        """`cache` filled with every position but the last, computed once per row, then expanded to the beams
        (`batch_repeat_interleave`: copies in a `PreallocatedCache`, one shared copy in a `SharedPrefixCache`).

        `generate` would repeat each row `num_beams` times and run the whole prefix (32 queries + prompt) for
        every copy, although all beams of a row share it: here the prefix runs once and its cache is
        expanded, and `generate` runs only the last position for each beam (it processes the inputs the cache
        does not hold). Position ids come from the full attention mask either way, and the beams' prefix
        values are exact copies, so the search sees the same numbers it would compute itself.
        """
        prefix_mask = mask[:, :-1]
        positions = {}
        if _forward_accepts(type(self.language_model), "position_ids"):
            # Llama-style LLMs number positions 0..n-1 unless told otherwise; `generate` numbers only the real
            # tokens (transformers' `_prepare_position_ids_for_generation`), so the cached prefix must too.
            positions["position_ids"] = (prefix_mask.long().cumsum(-1) - 1).masked_fill(prefix_mask == 0, 0)
        positions[_cache_keyword(self.language_model)] = cache
        if _forward_accepts(type(self.language_model), "logits_to_keep"):
            positions["logits_to_keep"] = 1  # only the cache is wanted: skip the output layer on every position
        self.language_model(inputs_embeds=embeds[:, :-1], attention_mask=prefix_mask, use_cache=True, **positions)
        cache.batch_repeat_interleave(num_beams)
        return cache

    def _empty_prompt(self, batch: int, device: torch.device) -> torch.Tensor:
        if self.is_encoder_decoder:
            return torch.zeros(batch, 0, dtype=torch.long, device=device)
        bos = self.config.text_config.bos_token_id
        return torch.full((batch, 1), bos, dtype=torch.long, device=device)


def _planned_length(prompt_length: int, generation_kwargs: dict[str, Any]) -> int:
    """Cache positions a generation will need: the prompt plus `max_new_tokens` (or up to `max_length`); the
    cache grows if a generation runs longer."""
    if generation_kwargs.get("max_new_tokens") is not None:
        return prompt_length + generation_kwargs["max_new_tokens"]
    return max(prompt_length, generation_kwargs.get("max_length") or 0) or prompt_length


# Causal LMs whose forward is `lm_head(model(...).last_hidden_state)` with nothing after the head.
PLAIN_HEAD_LANGUAGE_MODELS = frozenset({"OPTForCausalLM", "LlamaForCausalLM"})


def _cache_keyword(language_model: nn.Module) -> str:
    """`generate`'s name for a ready KV cache: `cache` in newer `transformers` 5.x, `past_key_values` before."""
    return _cache_keyword_of(type(language_model))


@functools.cache
def _cache_keyword_of(model_class: type) -> str:  # a signature lookup per class, not per generate call
    parameters = inspect.signature(model_class.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _penalise_new_tokens_per_row(kwargs: dict[str, Any]) -> None:
    """A repetition penalty over every generated token of every row, as LAVIS's `transformers` applied it.

    With embeddings only, `generate`'s ids are the new tokens; `transformers` 5.x still skips, per row, as many
    leading ids as the row has left pads (`prompt_ignore_length`, meant for left-padded prompt ids), so a padded
    row's first tokens went unpenalised and a batch answered differently from one row at a time. The same
    penalty as our own processor, without that offset."""
    penalty = kwargs.pop("repetition_penalty", None)
    if penalty is None or penalty == 1.0:
        return
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    kwargs["logits_processor"] = LogitsProcessorList([*kwargs.get("logits_processor", []),
                                                      RepetitionPenaltyLogitsProcessor(penalty)])


@functools.cache
def _forward_accepts(model_class: type, keyword: str) -> bool:
    return keyword in inspect.signature(model_class.forward).parameters


def move_padding_left(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[queries][pad][prompt] -> [pad][queries][prompt], the layout left-padded generation expects."""
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
    embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))
    return embeds, torch.gather(mask, 1, order)


class TextEmbeddings(nn.Module):
    """The Q-Former's own word + position embeddings (stage 1, retrieval)."""

    def __init__(self, vocab_size: int, hidden_size: int, max_positions: int, pad_token_id: int | None):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]


__all__ = ["Blip2Base", "Blip2Model", "Blip2Output", "TextEmbeddings", "move_padding_left", "padding_mask"]
