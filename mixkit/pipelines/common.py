"""What every pipeline shares: device and dtype choice, batching, reading image files, and the parts every
image-to-text pipeline (BLIP-2, BLIP, InstructBLIP, MiniGPT-4) has in common (`ImageTextPipeline`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from mixkit.data.text import clean_question
from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig, load_image
from mixkit.models.settings import GenerationSettings, PredictionSettings
from mixkit.pipelines.options import DEFAULT_TEMPLATE, label_prompts
from mixkit.utils.onednn import use_onednn_linears

ImageInput = Image.Image | str | Path  # a decoded image or a file to decode


def pick_device(device: str | torch.device | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def half_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; None on CPU (fp32 there: half precision is slow and lossy)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_images(images: Sequence[ImageInput]) -> list[Image.Image]:
    """PIL images as given, files decoded to RGB (`ImageLoadError` names a bad file)."""
    return [image if isinstance(image, Image.Image) else load_image(image) for image in images]


def place_model(model: nn.Module, device: str | None, fp32: bool = True) -> torch.device:
    """Move `model` to `device` (default: the GPU when there is one) and return that device. On a GPU, unless
    `fp32`, the frozen ViT trunk and LLM run in bf16/fp16 (`model.set_inference_dtypes`), as the reference
    implementations load them. On CPU the linear layers run on oneDNN (`mixkit.utils.onednn`)."""
    target = pick_device(device)
    half = None if fp32 else half_dtype(target)
    if half is not None:
        model.set_inference_dtypes(half, half)
    model.to(target)
    if target.type == "cpu":
        use_onednn_linears(model)
    return target


def pixel_batch(transform: Callable[[Image.Image], torch.Tensor], images: Sequence[ImageInput],
                device: torch.device) -> torch.Tensor:
    """Images (files decoded to RGB) through `transform`, stacked on `device`: [batch, 3, size, size]."""
    return torch.stack([transform(image) for image in as_images(images)]).to(device)


def answer_rows_grouped(images: Sequence[ImageInput], prompts: Sequence[Sequence[str]],
                        encode_images: Callable[[Sequence[ImageInput]], torch.Tensor],
                        answer_rows: Callable[[torch.Tensor, Sequence[str]], list[str]],
                        question_batch: int, image_batch: int | None) -> list[list[str]]:
    """Every prompt about each image (`prompts[i]` about `images[i]`), each image encoded once: images are
    encoded `image_batch` at a time (default: all at once) and their prompts answered by
    `answer_rows(embeds of each row, prompts)` in chunks of `question_batch` rows, which may mix images. The
    answers come back in the same nesting."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} question lists")
    step = image_batch or max(1, len(images))
    flat_answers: list[str] = []
    for start in range(0, len(images), step):
        embeds = encode_images(images[start : start + step])
        rows = [(index, prompt) for index, asked in enumerate(prompts[start : start + step]) for prompt in asked]
        for chunk in batches(rows, question_batch):
            index = torch.tensor([row for row, _ in chunk], device=embeds.device)
            flat_answers += answer_rows(embeds.index_select(0, index), [prompt for _, prompt in chunk])
    grouped, position = [], 0
    for asked in prompts:
        grouped.append(flat_answers[position : position + len(asked)])
        position += len(asked)
    return grouped


class ItcClassifier:
    """Zero-shot classification from ITC logits, for pipelines with `tokenize`, `text_features(ids, mask)`,
    `image_features(images).image_feats` and `model.similarity` (BLIP, ALBEF, BLIP-2 stage 1)."""

    @torch.no_grad()
    def classify(self, images: Sequence[ImageInput], labels: Sequence[str], template: str = DEFAULT_TEMPLATE,
                 batch_size: int = 8) -> torch.Tensor:
        """[images, labels] probabilities on the CPU: softmax over labels of the model's ITC logits (its cosine
        divided by the learned `temp`), labels in order."""
        tokens = self.tokenize(label_prompts(labels, template))
        text_feats = self.text_features(tokens.input_ids, tokens.attention_mask)
        probs = [self.model.similarity(self.image_features(chunk).image_feats, text_feats).softmax(-1).float().cpu()
                 for chunk in batches(list(images), batch_size)]
        return torch.cat(probs)


class ImageTextPipeline:
    """A checkpoint with its tokenizer, eval image preprocessing and prediction settings: what BLIP-2, BLIP,
    InstructBLIP and MiniGPT-4 pipelines hold, and the tasks they run alike. Subclasses define `generate(image
    embeddings, prompts, settings)`; `encode_images` gives what `generate` reads."""

    def __init__(self, model: Any, tokenizer: Any, image_config: ImageProcessorConfig, settings: PredictionSettings,
                 device: torch.device | str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = EvalImageTransform(image_config)
        self.settings = settings
        self.device = torch.device(device)

    def generate(self, image_embeds: torch.Tensor, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:
        raise NotImplementedError

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Pixel tensors on the model's device: [batch, 3, size, size]."""
        return pixel_batch(self.transform, images, self.device)

    @torch.no_grad()
    def encode_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Image-encoder outputs [batch, patches, hidden], computed once per image and reused for every prompt."""
        return self.model.encode_image(self.preprocess(images))

    def vqa_prompt(self, question: str, template: str | None = None) -> str:
        """The reference VQA prompt for a question (LAVIS's question cleaning, then the template)."""
        return (self.settings.vqa_prompt if template is None else template).format(clean_question(question))

    def model_prompt(self, instruction: str) -> str:
        """What the model reads for a task's instruction (caption prompt, VQA prompt): the instruction itself;
        MiniGPT-4 puts it in its conversation template."""
        return instruction

    def generate_per_image(self, images: Sequence[ImageInput], prompts: Sequence[str], settings: GenerationSettings,
                           batch_size: int) -> list[str]:
        """One text per (image, instruction) row, `batch_size` rows at a time, each chunk's images encoded
        together."""
        texts: list[str] = []
        for image_chunk, prompt_chunk in zip(batches(images, batch_size), batches(prompts, batch_size)):
            texts += self.generate(self.encode_images(image_chunk), [self.model_prompt(p) for p in prompt_chunk],
                                   settings)
        return texts

    def caption(self, images: Sequence[ImageInput], prompt: str | None = None,
                settings: GenerationSettings | None = None, batch_size: int = 8) -> list[str]:
        """One caption per image, without the prompt; `prompt` None: the checkpoint's, "" none."""
        prompt = self.settings.prompt if prompt is None else prompt
        return self.generate_per_image(images, [prompt] * len(images), settings or self.settings.caption, batch_size)

    def answer(self, images: Sequence[ImageInput], questions: Sequence[str],
               settings: GenerationSettings | None = None, batch_size: int = 8,
               prompt_template: str | None = None) -> list[str]:
        """One short answer per (image, question), with the reference prompt and question cleaning."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        prompts = [self.vqa_prompt(question, prompt_template) for question in questions]
        return self.generate_per_image(images, prompts, settings or self.settings.vqa, batch_size)

    def answer_grouped(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                       settings: GenerationSettings | None = None, question_batch: int = 8,
                       prompt_template: str | None = None, image_batch: int | None = None) -> list[list[str]]:
        """Every question about each image, each image encoded once: `questions[i]` are asked about
        `images[i]`; the answers come back in the same nesting. Images are encoded `image_batch` at a time
        (default: all at once); their questions share generation batches of `question_batch` rows."""
        settings = settings or self.settings.vqa
        prompts = [[self.vqa_prompt(question, prompt_template) for question in asked] for asked in questions]
        return answer_rows_grouped(images, prompts, self.encode_images,
                                   lambda embeds, rows: self.generate(embeds, rows, settings), question_batch,
                                   image_batch)

    def answer_grouped_image_by_image(self, images: Sequence[ImageInput], questions: Sequence[Sequence[str]],
                                      settings: GenerationSettings | None, question_batch: int,
                                      prompt_template: str | None, image_batch: int | None) -> list[list[str]]:
        """`answer_grouped` whose generation batches each hold one image's questions only (that image's
        embedding repeated), `question_batch` at a time; images encoded `image_batch` at a time (default all)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} question lists")
        settings = settings or self.settings.vqa
        step = image_batch or max(1, len(images))
        answers: list[list[str]] = []
        for start in range(0, len(images), step):
            embeds = self.encode_images(images[start : start + step])
            for row, asked in enumerate(questions[start : start + step]):
                prompts = [self.model_prompt(self.vqa_prompt(question, prompt_template)) for question in asked]
                texts: list[str] = []
                for chunk in batches(prompts, question_batch):
                    texts += self.generate(embeds[row : row + 1].expand(len(chunk), -1, -1), chunk, settings)
                answers.append(texts)
        return answers

    def save_pretrained(self, directory: str | Path) -> Path:
        """A complete, self-describing folder: weights, config, tokenizer, preprocessing, settings."""
        directory = self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.transform.config.save(directory)
        self.settings.save(directory)
        return directory
