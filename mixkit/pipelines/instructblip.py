"""InstructBLIP for chat, captions and answers: images + instructions in, strings out.

Implements the chat protocol of `mixkit.pipelines.chat` (`respond`, `chat`, `chat_settings`) and BLIP-2's task
interface (`caption`, `answer`, `answer_grouped`, `vqa_prompt`, `settings`), so `mixkit predict chat|caption|vqa`,
`mixkit chat` and `mixkit eval vqa|caption` serve it. Every prompt is an instruction that goes both to the
Q-Former (its BERT tokenizer, `qformer_tokenizer/` in a `transformers`-saved folder, truncated on the left at 128
tokens as LAVIS does) and to the LLM; each image is encoded by the ViT once for all its instructions.

Conversation history (LAVIS's InstructBLIP is single-turn): earlier turns are given as LAVIS's own
visual-dialog form, `dialog history: q: ... a: ... q: ... a: ...` followed by a newline and the new instruction
(`blip2_vicuna_instruct.py::_predict_class` builds `f"dialog history: {history}\\n{prompt}"`; the history string
is `visdial_dialogue_datasets.py`'s `" q: {question} a: {answer}"` turns joined). A first turn is the instruction
alone, as in single-turn use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TextStreamer

from mixkit.data.transforms import ImageProcessorConfig
from mixkit.models.generation_config import read_generation_settings
from mixkit.models.hub import resolve_checkpoint
from mixkit.models.instructblip.modeling import InstructBlipModel
from mixkit.models.instructblip.reference import QFORMER_MAX_LENGTH, reference_settings
from mixkit.models.settings import GenerationSettings, PredictionSettings
from mixkit.pipelines.blip2 import catalogue_entry_for
from mixkit.pipelines.chat import ChatTurn, check_turns
from mixkit.pipelines.common import ImageInput, ImageTextPipeline, place_model
from mixkit.pipelines.settings import resolve_prediction_settings

QFORMER_TOKENIZER_DIR = "qformer_tokenizer"  # where `InstructBlipProcessor.save_pretrained` puts it


def conversation_prompt(turns: Sequence[ChatTurn]) -> str:
    """The instruction for the last user turn, with the earlier turns as LAVIS's visual-dialog history."""
    check_turns(turns)
    pairs = zip(turns[:-1:2], turns[1:-1:2])
    history = " ".join(f"q: {user.text.strip()} a: {assistant.text.strip()}" for user, assistant in pairs)
    question = turns[-1].text.strip()
    return f"dialog history: {history}\n{question}" if history else question


class _CallbackStreamer(TextStreamer):
    """`transformers`' word-boundary text streamer, handing the pieces to a callback instead of printing."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


def _load_qformer_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    folder = directory / QFORMER_TOKENIZER_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{directory}: no {QFORMER_TOKENIZER_DIR}/ folder; InstructBLIP needs the Q-Former's "
                                "BERT tokenizer there (InstructBlipProcessor.save_pretrained writes it)")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.truncation_side = "left"  # once, at load: LAVIS keeps the end of a long instruction
    return tokenizer


class InstructBlipPipeline(ImageTextPipeline):
    """An InstructBLIP checkpoint with its two tokenizers, image preprocessing and reference settings (`caption`,
    `answer`, `vqa_prompt`: `ImageTextPipeline`'s). The ViT runs once per image (`encode_images`); the Q-Former
    runs per instruction in `generate`."""

    family = "instructblip"
    tasks = ("chat", "caption", "vqa")

    def __init__(self, model: InstructBlipModel, tokenizer: PreTrainedTokenizerBase,
                 qformer_tokenizer: PreTrainedTokenizerBase, image_config: ImageProcessorConfig,
                 settings: PredictionSettings, device: torch.device | str = "cpu"):
        if settings.chat is None:
            raise ValueError("InstructBLIP settings need chat generation settings")
        super().__init__(model, tokenizer, image_config, settings, device)
        self.qformer_tokenizer = qformer_tokenizer
        self.padding_side = "right" if model.is_encoder_decoder else "left"

    @classmethod
    def from_pretrained(cls, name_or_dir: str, device: str | None = None, fp32: bool = False) -> InstructBlipPipeline:
        """A catalogue name or a folder (mixkit- or `transformers`-saved: model, tokenizer, `qformer_tokenizer/`,
        `preprocessor_config.json`). Settings: the catalogue entry's, else the folder's `mixkit_settings.json`,
        else LAVIS's with the folder's `generation_config.json` for chat."""
        directory = resolve_checkpoint(name_or_dir)
        entry = catalogue_entry_for(name_or_dir, directory)
        model = InstructBlipModel.from_pretrained(directory)
        encoder_decoder = model.is_encoder_decoder
        settings = resolve_prediction_settings(directory, entry, lambda: reference_settings(
            encoder_decoder, read_generation_settings(directory, encoder_decoder)))
        target = place_model(model, device, fp32)
        return cls(model, AutoTokenizer.from_pretrained(directory), _load_qformer_tokenizer(directory),
                   ImageProcessorConfig.load(directory), settings, target)

    @property
    def chat_settings(self) -> GenerationSettings:
        return self.settings.chat

    # ---------------------------------------------------------------- building blocks

    def _instruction_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        llm = self.tokenizer(list(prompts), padding=True, padding_side=self.padding_side, return_tensors="pt")
        qformer = self.qformer_tokenizer(list(prompts), padding=True, padding_side="right", truncation=True,
                                         max_length=QFORMER_MAX_LENGTH, return_tensors="pt")
        inputs = {"input_ids": llm.input_ids, "attention_mask": llm.attention_mask,
                  "qformer_input_ids": qformer.input_ids, "qformer_attention_mask": qformer.attention_mask}
        return {name: value.to(self.device) for name, value in inputs.items()}

    @torch.no_grad()
    def generate(self, image_embeds: torch.Tensor, prompts: Sequence[str], settings: GenerationSettings,
                 **generation_kwargs: Any) -> list[str]:
        """One text per (image embedding, instruction) row: the continuation only, stripped."""
        ids = self.model.generate(image_embeds=image_embeds, **self._instruction_inputs(prompts),
                                  **settings.generate_kwargs(), **generation_kwargs)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---------------------------------------------------------------- chat

    def respond(self, images: Sequence[ImageInput], prompts: Sequence[str],
                settings: GenerationSettings | None = None, batch_size: int = 8) -> list[str]:
        """Single-turn, batched: one response per (image, instruction) row."""
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompt {index + 1} is empty")
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        return self.generate_per_image(images, prompts, settings or self.chat_settings, batch_size)

    def chat(self, image: ImageInput | None, turns: Sequence[ChatTurn], settings: GenerationSettings | None = None,
             on_text: Callable[[str], None] | None = None) -> str:
        """The response to the last user turn given the history. Greedy decoding streams word by word to
        `on_text`; beam search can only hand over the finished response (the best beam is known at the end)."""
        if image is None:
            raise ValueError("InstructBLIP answers about an image: give one")
        settings = settings or self.chat_settings
        prompt = conversation_prompt(turns)
        streams = on_text is not None and settings.num_beams == 1
        extra = {"streamer": _CallbackStreamer(self.tokenizer, on_text)} if streams else {}
        response = self.generate(self.encode_images([image]), [prompt], settings, **extra)[0]
        if on_text is not None and not streams:
            on_text(response)
        return response

    # ---------------------------------------------------------------- tasks with the reference prompts

    def answer_grouped(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                       settings: GenerationSettings | None = None, question_batch: int = 8,
                       prompt_template: str | None = None, image_batch: int | None = None) -> list[list[str]]:
        """Every question about each image, each image encoded once; a generation batch holds one image's
        questions only."""
        return self.answer_grouped_image_by_image(images, questions, settings, question_batch, prompt_template,
                                                  image_batch)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Weights, config, both tokenizers (the Q-Former's in `qformer_tokenizer/`), preprocessing, settings."""
        directory = super().save_pretrained(directory)
        self.qformer_tokenizer.save_pretrained(Path(directory) / QFORMER_TOKENIZER_DIR)
        return directory


__all__ = ["InstructBlipPipeline", "conversation_prompt"]
