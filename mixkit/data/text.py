"""Caption and question cleaning, reproducing LAVIS `blip_caption` / `blip_question`.

The rules (and their order) follow `lavis/processors/blip_processors.py`, quirks
included, so that prompts and targets match what the released checkpoints saw:
captions turn punctuation into spaces and collapse runs of whitespace; questions
delete punctuation (keeping `?`) and never collapse whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The characters LAVIS strips; note that `?`, `,`, `'` and `-` are kept.
_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
# Only runs of two or more: a single "\n" or "\t" between words survives, as in LAVIS.
_WHITESPACE_RUN = re.compile(r"\s{2,}")


def _truncate_words(text: str, max_words: int) -> str:
    # LAVIS splits on single spaces (not str.split()), so words are space-separated chunks.
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def _check_max_words(max_words: int) -> None:
    if max_words <= 0:
        raise ValueError(f"max_words must be positive, got {max_words}")


def clean_caption(text: str, max_words: int = 50) -> str:
    """LAVIS `BlipCaptionProcessor.pre_caption`: lowercase, punctuation -> space, collapse, truncate."""
    _check_max_words(max_words)
    caption = _PUNCTUATION.sub(" ", text.lower())
    caption = _WHITESPACE_RUN.sub(" ", caption)
    caption = caption.rstrip("\n").strip(" ")
    return _truncate_words(caption, max_words)


def clean_question(text: str, max_words: int = 50) -> str:
    """LAVIS `BlipQuestionProcessor.pre_question`: lowercase, delete punctuation, rstrip spaces, truncate."""
    _check_max_words(max_words)
    question = _PUNCTUATION.sub("", text.lower())
    question = question.rstrip(" ")
    return _truncate_words(question, max_words)


@dataclass
class CaptionProcessor:
    """Clean a caption and put `prompt` in front (e.g. "a photo of " for captioning checkpoints)."""

    prompt: str = ""
    max_words: int = 50

    def __post_init__(self) -> None:
        _check_max_words(self.max_words)

    def __call__(self, text: str) -> str:
        # The prompt is not cleaned and not counted in max_words, as in LAVIS.
        return self.prompt + clean_caption(text, self.max_words)


@dataclass
class QuestionProcessor:
    """Clean a VQA question."""

    max_words: int = 50

    def __post_init__(self) -> None:
        _check_max_words(self.max_words)

    def __call__(self, text: str) -> str:
        return clean_question(text, self.max_words)
