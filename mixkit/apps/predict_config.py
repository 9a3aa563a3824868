"""The typed options of `mixkit predict caption|vqa`, apart from the code that runs them.

This module imports no torch, PIL or `transformers`, so building the `mixkit` parser stays fast;
`mixkit.apps.predict` loads images and models when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mixkit.pipelines.options import GenerationOptions, ModelOptions


class InputError(ValueError):
    """Bad user input, reported as one line and exit code 2."""


@dataclass(kw_only=True)
class CaptionPredictConfig(GenerationOptions, ModelOptions):
    image: list[str] = field(metadata={"help": "one or more image files", "metavar": "PATH"})
    json: bool = field(default=False, metadata={"help": "print one JSON array instead of text lines"})


@dataclass(kw_only=True)
class VqaPredictConfig(CaptionPredictConfig):
    question: list[str] = field(metadata={
        "help": "the question; give one per image, one for all images, or several for a single image (the "
                "image is encoded once for all its questions)", "metavar": "TEXT"})

    def pairs(self) -> tuple[list[str], list[str]]:
        """(image, question) rows: one question per image, a single question for every image, or every
        question about a single image."""
        images, questions = list(self.image), list(self.question)
        if len(questions) == 1:
            questions *= len(images)
        elif len(images) == 1:
            images *= len(questions)
        if len(questions) != len(images):
            raise InputError(f"--question: got {len(questions)} questions for {len(images)} images; give one per "
                             "image, a single one for all, or several for a single image")
        for index, question in enumerate(questions):
            if not question.strip():
                raise InputError(f"--question {index + 1}: the question is empty")
        return images, questions


PREDICT_CONFIGS: dict[str, type[CaptionPredictConfig]] = {"caption": CaptionPredictConfig, "vqa": VqaPredictConfig}
