"""The typed options of `mixkit predict caption|vqa|classify`, apart from the code that runs them.

This module imports no torch, PIL or `transformers`, so building the `mixkit` parser stays fast;
`mixkit.apps.predict` loads images and models when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mixkit.pipelines.options import (DEFAULT_TEMPLATE, ChatGenerationOptions, GenerationOptions, ModelOptions,
                                    label_prompts)


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

    answers: str | None = field(default=None, metadata={
        "help": "BLIP: rank this answer list instead of generating (LAVIS's VQAv2 'rank' mode): a JSON list of "
                "strings, or a text file with one answer per line", "metavar": "FILE"})

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


_MODEL_FIELDS = ModelOptions.__dataclass_fields__  # the same --model/--device help as the other commands


@dataclass(kw_only=True)
class ClassifyPredictConfig:
    """Both families classify in fp32, so there is no --fp32."""

    model: str = field(metadata=_MODEL_FIELDS["model"].metadata)
    device: str | None = field(default=None, metadata=_MODEL_FIELDS["device"].metadata)
    image: list[str] = field(metadata={"help": "one or more image files", "metavar": "PATH"})
    labels: str = field(metadata={"help": "the candidate labels, comma-separated (e.g. 'cat,dog,car')",
                                  "metavar": "LIST"})
    # The CLIP paper's default single prompt (see `mixkit.pipelines.options.DEFAULT_TEMPLATE` for the source).
    template: str = field(default=DEFAULT_TEMPLATE, metadata={
        "help": f"the prompt each label fills in at {{}} (default {DEFAULT_TEMPLATE!r}, the CLIP paper's)"})
    batch_size: int = field(default=8, metadata={"help": "images per forward pass (default 8)"})
    json: bool = field(default=False, metadata={"help": "print one JSON array instead of text lines"})

    def label_list(self) -> list[str]:
        """The labels in order, blanks around commas removed."""
        return [label.strip() for label in self.labels.split(",")]

    def check(self) -> None:
        """InputError naming the option: no labels, a blank one, a template without {}, a batch below 1."""
        try:
            label_prompts(self.label_list(), self.template)
        except ValueError as error:
            raise InputError(str(error)) from None
        if self.batch_size < 1:
            raise InputError(f"--batch-size: must be >= 1, got {self.batch_size}")


@dataclass(kw_only=True)
class MatchPredictConfig:
    """Image-text matching runs in fp32, so there is no --fp32."""

    model: str = field(metadata=_MODEL_FIELDS["model"].metadata)
    device: str | None = field(default=None, metadata=_MODEL_FIELDS["device"].metadata)
    image: list[str] = field(metadata={"help": "one or more image files", "metavar": "PATH"})
    text: list[str] = field(metadata={
        "help": "the text to match; one per image, one for all images, or several for a single image",
        "metavar": "TEXT"})
    json: bool = field(default=False, metadata={"help": "print one JSON array instead of text lines"})

    def pairs(self) -> tuple[list[str], list[str]]:
        """(image, text) rows, paired as `--question` pairs with `--image` in `predict vqa`."""
        images, texts = list(self.image), list(self.text)
        if len(texts) == 1:
            texts *= len(images)
        elif len(images) == 1:
            images *= len(texts)
        if len(texts) != len(images):
            raise InputError(f"--text: got {len(texts)} texts for {len(images)} images; give one per image, a "
                             "single one for all, or several for a single image")
        for index, text in enumerate(texts):
            if not text.strip():
                raise InputError(f"--text {index + 1}: the text is empty")
        return images, texts


@dataclass(kw_only=True)
class ChatPredictConfig(ChatGenerationOptions, ModelOptions):
    """`mixkit predict chat`: one instruction about each image, answered by any chat pipeline."""

    image: list[str] = field(metadata={"help": "one or more image files", "metavar": "PATH"})
    prompt: str = field(metadata={"help": "the instruction, asked about every image", "metavar": "TEXT"})
    json: bool = field(default=False, metadata={"help": "print one JSON array instead of text lines"})

    def check(self) -> None:
        super().check()
        if not self.prompt.strip():
            raise InputError("--prompt: the instruction is empty")


@dataclass(kw_only=True)
class ChatConfig(ChatGenerationOptions, ModelOptions):
    """`mixkit chat`: an interactive conversation about one image (messages from stdin)."""

    image: str = field(metadata={"help": "the image to talk about", "metavar": "PATH"})
    prompt: str | None = field(default=None, metadata={
        "help": "the first message (then the conversation goes on from stdin)", "metavar": "TEXT"})
    batch_size: int = field(default=1, metadata={"cli": False})  # one image, one conversation


PREDICT_CONFIGS: dict[str, type] = {"caption": CaptionPredictConfig, "vqa": VqaPredictConfig,
                                    "classify": ClassifyPredictConfig, "match": MatchPredictConfig,
                                    "chat": ChatPredictConfig}
