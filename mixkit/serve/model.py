"""What the server asks of a pipeline, and how one batch of requests becomes one pipeline call.

Only the pipelines' public methods are used (`caption`, `answer`, `classify`, `chat`, `settings`,
`chat_settings`). Requests share a call when their `BatchKey`s are equal: the same task, prompt and generation
settings (caption, VQA, single-turn chat through `respond`), the same labels and template (classify). A
conversation with history, or a streamed one, runs on its own (one `chat` call).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mixkit.models.settings import GenerationSettings
from mixkit.pipelines.chat import ChatPipeline, ChatTurn

SINGLE_TASKS = ("caption", "vqa", "classify")  # one image and one text in, batched


@dataclass(frozen=True)
class CaptionKey:
    prompt: str | None  # None: the checkpoint's own prompt
    settings: GenerationSettings


@dataclass(frozen=True)
class VqaKey:
    template: str | None  # None: the checkpoint's own VQA prompt
    settings: GenerationSettings


@dataclass(frozen=True)
class ClassifyKey:
    labels: tuple[str, ...]
    template: str


@dataclass(frozen=True)
class RespondKey:
    """Single-turn chat requests without streaming: batched through `respond`, as `mixkit predict chat` runs."""

    settings: GenerationSettings


@dataclass(frozen=True)
class ChatKey:
    number: int  # unique: conversations are not batched
    settings: GenerationSettings


@dataclass
class ChatJob:
    image: Image.Image | None
    turns: list[ChatTurn]
    on_text: Callable[[str], None] | None  # streaming: receives the text pieces as they are generated


class ServedModel:
    """A loaded pipeline and the tasks it can serve."""

    def __init__(self, pipeline: Any, name: str) -> None:
        self.pipeline = pipeline
        self.name = name
        declared = set(getattr(pipeline, "tasks", ()))
        self.tasks = [task for task in SINGLE_TASKS if task in declared]
        if isinstance(pipeline, ChatPipeline):
            self.tasks.append("chat")
        self._chat_numbers = itertools.count()

    @property
    def family(self) -> str:
        return getattr(self.pipeline, "family", "unknown")

    def chat_key(self, settings: GenerationSettings) -> ChatKey:
        return ChatKey(next(self._chat_numbers), settings)

    def run_batch(self, key: Hashable, payloads: Sequence[Any]) -> list[Any]:
        """One pipeline call for requests with equal keys (runs on the model's worker thread)."""
        size = len(payloads)
        if isinstance(key, CaptionKey):
            return self.pipeline.caption(list(payloads), prompt=key.prompt, settings=key.settings, batch_size=size)
        if isinstance(key, VqaKey):
            images, questions = zip(*payloads)
            return self.pipeline.answer(list(images), list(questions), settings=key.settings, batch_size=size,
                                        prompt_template=key.template)
        if isinstance(key, ClassifyKey):
            probs = self.pipeline.classify(list(payloads), list(key.labels), template=key.template, batch_size=size)
            return probs.tolist()
        if isinstance(key, RespondKey):
            images, prompts = zip(*payloads)
            return self.pipeline.respond(list(images), list(prompts), settings=key.settings)
        if isinstance(key, ChatKey):
            return [self.pipeline.chat(job.image, job.turns, settings=key.settings, on_text=job.on_text)
                    for job in payloads]
        raise TypeError(f"no task for batch key {key!r}")
