"""Chat, caption, answer and ground with a MiniGPT-4 / MiniGPT-v2 checkpoint, as the official code prompts them.

The prompt is the checkpoint's conversation template (`mixkit.models.minigpt4.templates`); the text around
each `<ImageHere>` is tokenized separately, BOS only on the first segment (`get_context_emb`), with the
Llama tokenizer in its legacy (sentencepiece) mode as `transformers` 4.30 ran it; the image's LLM tokens
fill the placeholder. Rows are left-padded with zero vectors (`MiniGPTBase.generate`). Generation stops on
the template's stop words (and eos); the response is cleaned as `Chat.answer` (chat) or
`MiniGPTBase.generate` (MiniGPT-v2's caption / VQA / grounding evaluation) clean it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence

import torch
from transformers import LlamaTokenizer, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.minigpt4.modeling import MiniGPT4Model, left_padded
from mixkit.models.minigpt4.templates import (
    IMAGE_PLACEHOLDER, TEMPLATES, V2_REFER_PROMPT, chat_response, chat_settings, conversation_prompt,
    generate_response, prompt_segments, reference_settings,
)
from mixkit.models.settings import GenerationSettings, PredictionSettings
from mixkit.pipelines.blip2 import catalogue_entry_for
from mixkit.pipelines.chat import ChatTurn, check_turns
from mixkit.pipelines.common import ImageInput, ImageTextPipeline, place_model
from mixkit.pipelines.settings import resolve_prediction_settings
from mixkit.models.hub import resolve_checkpoint

BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
CHAT_MAX_LENGTH = 2000  # Chat.answer_prepare(max_length=2000): older context is cut from the left


def stop_sequences(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[list[int]]:
    """Token-id sequences of each stop word, word-initial and after a letter: for LLaMA's vocabulary "###"
    gives [835] ("▁###") and [2277, 29937] ("##", "#"), the ids demo.py hard-codes."""
    sequences: list[list[int]] = []
    prefix = tokenizer.encode("a", add_special_tokens=False)
    for word in words:
        candidates = [tokenizer.encode(word, add_special_tokens=False)]
        joined = tokenizer.encode("a" + word, add_special_tokens=False)
        if joined[: len(prefix)] == prefix:
            candidates.append(joined[len(prefix):])
        sequences += [ids for ids in candidates if ids and ids not in sequences]
    return sequences


class StopOnSequences(StoppingCriteria):
    """A row is done once its output ends with one of the sequences (`StoppingCriteriaSub`, per row)."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.sequences = [torch.tensor(ids) for ids in sequences]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for stop in self.sequences:
            if input_ids.shape[1] >= len(stop):
                done |= (input_ids[:, -len(stop):] == stop.to(input_ids.device)).all(dim=1)
        return done


class TextPieces:
    """A `generate` streamer: decodes the growing output and hands `on_text` each new piece of the cleaned
    response, holding back a tail that may still become a stop word."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop_words: Sequence[str], on_text: Callable[[str], None]):
        self.tokenizer, self.stop_words, self.on_text = tokenizer, tuple(stop_words), on_text
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first passes the prompt's ids (none: the prompt is embeddings)
            self.prompt_seen = True
            return
        self.ids += value.reshape(-1).tolist()
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _settled(self) -> list[int]:
        """The ids whose text can no longer change: a trailing run of byte-fallback pieces (`<0xE2>`...) may
        still be half a character, so it waits for the next ordinary token."""
        tokens = self.tokenizer.convert_ids_to_tokens(self.ids)
        end = len(tokens)
        while end and BYTE_PIECE.fullmatch(tokens[end - 1]):
            end -= 1
        return self.ids[:end]

    def _emit(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids if final else self._settled(), skip_special_tokens=True)
        for word in self.stop_words:
            text = text.split(word)[0]
        text = text.lstrip()
        if not final:  # hold back a tail that may still grow into a stop word
            held = max((k for word in self.stop_words for k in range(1, len(word)) if text.endswith(word[:k])),
                       default=0)
            text = text[: len(text) - held]
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text


class MiniGPT4Pipeline(ImageTextPipeline):
    """A MiniGPT-4 / MiniGPT-v2 checkpoint with its Llama tokenizer, image preprocessing and settings (`caption`,
    `answer`, `save_pretrained`: `ImageTextPipeline`'s, every prompt put in the template by `generate_per_image`)."""

    family = "minigpt4"
    tasks = ("chat", "caption", "vqa", "grounding")

    def __init__(self, model: MiniGPT4Model, tokenizer: PreTrainedTokenizerBase, image_config: ImageProcessorConfig,
                 settings: PredictionSettings, device: torch.device | str = "cpu"):
        super().__init__(model, tokenizer, image_config, settings, device)
        self.template = TEMPLATES[model.config.conversation_template]
        self.num_image_tokens = model.num_image_tokens(image_config.image_size)
        self.stop_ids = stop_sequences(tokenizer, self.template.stop_words)

    @classmethod
    def from_pretrained(cls, name_or_dir: str, device: str | None = None, fp32: bool = False) -> MiniGPT4Pipeline:
        """A catalogue name or a mixkit MiniGPT-4 folder (see `mixkit convert minigpt4`). On a GPU the frozen
        ViT and the LLM run in half precision, as the official code loads them, unless `fp32`."""
        directory = resolve_checkpoint(name_or_dir)
        entry = catalogue_entry_for(name_or_dir, directory)
        model = MiniGPT4Model.from_pretrained(directory)
        template = model.config.conversation_template
        settings = resolve_prediction_settings(directory, entry, lambda: reference_settings(template))
        target = place_model(model, device, fp32)
        tokenizer = LlamaTokenizer.from_pretrained(directory, legacy=True)  # the flag is not saved with it
        if len(tokenizer) > model.language_model.config.vocab_size:
            raise ValueError(f"{directory}: the tokenizer has {len(tokenizer)} tokens but the language model only "
                             f"{model.language_model.config.vocab_size}: they do not belong together")
        return cls(model, tokenizer, ImageProcessorConfig.load(directory), settings, target)

    @property
    def chat_settings(self) -> GenerationSettings:
        return chat_settings(self.template.name)

    # ---------------------------------------------------------------- building blocks

    @torch.no_grad()
    def encode_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Each image's LLM tokens [batch, tokens, LLM hidden], computed once and reused for every prompt."""
        return self.model.image_tokens(self.model.encode_image(self.preprocess(images)))

    def prompt_ids(self, prompt: str) -> tuple[list[int], list[bool]]:
        """Token ids of the prompt with `num_image_tokens` slots per `<ImageHere>` (marked True), each text
        segment tokenized on its own and only the first given BOS."""
        ids: list[int] = []
        slots: list[bool] = []
        for index, segment in enumerate(prompt_segments(prompt)):
            if index > 0:
                ids += [0] * self.num_image_tokens
                slots += [True] * self.num_image_tokens
            tokens = self.tokenizer(segment, add_special_tokens=index == 0)["input_ids"]
            ids += tokens
            slots += [False] * len(tokens)
        return ids, slots

    def _embeddings(self, prompt: str, image_tokens: torch.Tensor | None) -> torch.Tensor:
        ids, slots = self.prompt_ids(prompt)
        images = image_tokens[None] if image_tokens is not None else image_tokens
        if images is None:
            if any(slots):
                raise ValueError(f"the prompt has {IMAGE_PLACEHOLDER} but no image was given")
            images = torch.zeros(0, self.num_image_tokens, 1)
        input_ids = torch.tensor([ids], device=self.device)
        mask = torch.tensor([slots], device=self.device)
        return self.model.input_embeddings(input_ids, mask, images)[0]

    def _generation_kwargs(self, settings: GenerationSettings) -> dict:
        kwargs = settings.generate_kwargs()
        kwargs.update(eos_token_id=self.model.language_model.config.eos_token_id,
                      pad_token_id=self.tokenizer.pad_token_id)
        if self.stop_ids:
            kwargs["stopping_criteria"] = StoppingCriteriaList([StopOnSequences(self.stop_ids)])
        return kwargs

    @torch.no_grad()
    def generate(self, image_tokens: torch.Tensor | None, prompts: Sequence[str], settings: GenerationSettings,
                 clean: Callable[[str], str] = generate_response, streamer: TextPieces | None = None,
                 max_length: int | None = None) -> list[str]:
        """One cleaned response per prompt; row i reads `image_tokens[i]` (None: text only). With
        `max_length`, a context longer than `max_length - max_new_tokens` keeps only its latest positions."""
        rows = [self._embeddings(prompt, None if image_tokens is None else image_tokens[index])
                for index, prompt in enumerate(prompts)]
        if max_length is not None:
            keep = max(1, max_length - settings.max_new_tokens)
            rows = [row[-keep:] for row in rows]
        embeds, mask = left_padded(rows)
        kwargs = self._generation_kwargs(settings)
        if streamer is not None:
            kwargs["streamer"] = streamer
        with warnings.catch_warnings():
            # A prompt given as embeddings has no ids, so the repetition penalty sees only new tokens; the official
            # code (transformers 4.30, inputs_embeds only) penalised the same way. `transformers` warns each call.
            warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with `inputs_embeds`")
            ids = self.model.generate(embeds, mask, **kwargs)
        return [clean(text) for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---------------------------------------------------------------- chat protocol

    def respond(self, images: Sequence[ImageInput], prompts: Sequence[str],
                settings: GenerationSettings | None = None) -> list[str]:
        """Single-turn chat, one response per (image, prompt) row, in the chat template."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        texts = [self.model_prompt(prompt) for prompt in prompts]
        return self.generate(self.encode_images(images), texts, settings or self.chat_settings, clean=chat_response)

    def chat(self, image: ImageInput | None, turns: Sequence[ChatTurn], settings: GenerationSettings | None = None,
             on_text: Callable[[str], None] | None = None) -> str:
        """The answer to the last user turn given the history (the image goes with the first turn)."""
        check_turns(turns)
        prompt = conversation_prompt(self.template, [(turn.role, turn.text) for turn in turns],
                                     with_image=image is not None)
        tokens = None if image is None else self.encode_images([image])
        streamer = None if on_text is None else TextPieces(self.tokenizer, self.template.stop_words, on_text)
        return self.generate(tokens, [prompt], settings or self.chat_settings, clean=chat_response,
                             streamer=streamer, max_length=CHAT_MAX_LENGTH)[0]

    # ---------------------------------------------------------------- tasks

    def model_prompt(self, instruction: str) -> str:
        """The instruction as the first user message of the template (`prepare_texts` in the eval scripts)."""
        return conversation_prompt(self.template, [("user", instruction)])

    def vqa_prompt(self, question: str, template: str | None = None) -> str:
        return (self.settings.vqa_prompt if template is None else template).format(question.strip())

    def answer_grouped(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                       settings: GenerationSettings | None = None, question_batch: int = 8,
                       prompt_template: str | None = None, image_batch: int | None = None) -> list[list[str]]:
        """Every question about each image, each image encoded on its own (`image_batch` is not used)."""
        return self.answer_grouped_image_by_image(images, questions, settings, question_batch, prompt_template, 1)

    def ground(self, images: Sequence[ImageInput], expressions: Sequence[str],
               settings: GenerationSettings | None = None, batch_size: int = 8,
               prompt_template: str = V2_REFER_PROMPT) -> list[str]:
        """MiniGPT-v2 `[refer]` answers (box text, see `mixkit.models.minigpt4.boxes`), one per expression."""
        if len(images) != len(expressions):
            raise ValueError(f"{len(images)} images but {len(expressions)} expressions")
        prompts = [prompt_template.format(expression) for expression in expressions]
        return self.generate_per_image(images, prompts, settings or self.settings.vqa, batch_size)


__all__ = ["MiniGPT4Pipeline", "StopOnSequences", "TextPieces", "stop_sequences"]
