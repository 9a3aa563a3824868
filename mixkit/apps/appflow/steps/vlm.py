"""Chat models that describe an image: Qwen2-VL through `transformers`, MiniGPT-4 through mixkit's chat pipeline.

Qwen2-VL (PaddleMIX's `QwenVLChatTask`, paddlemix/appflow/image2text_generation.py): `image` and/or `prompt` ->
`result`; the conversation is kept, so a later call may pass only `prompt` (multi-turn); an image without a
prompt is asked to be described (PaddleMIX asks "描述所有图片", "describe all the images"). The inputs are built
as `Qwen2VLProcessor` builds them (transformers `processing_qwen2_vl.py` / `processing_utils.py`): the
checkpoint's chat template, each `<|image_pad|>` repeated `grid_t * grid_h * grid_w / merge_size**2` times, and
`mm_token_type_ids` 1 on image tokens. The processor itself cannot be built without torchvision (its video
processor), which has no CPU build for this torch, so the image processor and tokenizer are used directly;
`tests/apps/test_appflow_vision.py` checks the inputs equal the processor's.

MiniGPT-4 (PaddleMIX's `MiniGPT4Task`): `image` + `minigpt4_text` -> `result`, through
`load_pipeline(model, task="chat")` and the checkpoint's own chat template and settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mixkit.apps.appflow.step import Step, StepInputError
from mixkit.apps.appflow.steps.common import state_image
from mixkit.pipelines.common import pick_device

DESCRIBE_PROMPT = "Describe the image."
MAX_NEW_TOKENS = 128


def _text(state: dict[str, Any], key: str) -> str | None:
    value = state.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise StepInputError(f"{key!r} must be a non-empty string")
    return value


def folder_chat_template(directory: Path, tokenizer: Any) -> str:
    """The processor's chat template (`chat_template.jinja` / `chat_template.json`), else the tokenizer's."""
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text()
    if (directory / "chat_template.json").is_file():
        return json.loads((directory / "chat_template.json").read_text())["chat_template"]
    if tokenizer.chat_template:
        return tokenizer.chat_template
    raise FileNotFoundError(f"{directory}: no chat template (chat_template.jinja, chat_template.json or the "
                            "tokenizer's)")


class Qwen2VLStep(Step):
    reads = ()
    writes = ("result",)
    image_token = "<|image_pad|>"

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.torch_device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.image_processor = AutoImageProcessor.from_pretrained(model_dir)
        self.chat_template = folder_chat_template(Path(model_dir), self.tokenizer)
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir).to(self.torch_device).eval()
        self.messages: list[dict[str, Any]] = []  # the conversation so far (PaddleMIX keeps `history`)
        self.images: list[Image.Image] = []

    def reset(self) -> None:
        self.messages, self.images = [], []

    def build_inputs(self, messages: list[dict[str, Any]], images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, mm_token_type_ids (+ pixel_values, image_grid_thw) as the processor gives."""
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=True)
        pixels: dict[str, torch.Tensor] = {}
        if images:
            pixels = dict(self.image_processor(images=images, return_tensors="pt"))
            merge = self.image_processor.merge_size ** 2
            pieces = text.split(self.image_token)
            if len(pieces) - 1 != len(images):
                raise ValueError(f"the chat template placed {len(pieces) - 1} images for {len(images)} given")
            counts = [int(grid.prod()) // merge for grid in pixels["image_grid_thw"]]
            text = pieces[0] + "".join(self.image_token * n + piece for n, piece in zip(counts, pieces[1:]))
        tokens = self.tokenizer([text], return_tensors="pt")
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        return {**tokens, "mm_token_type_ids": (tokens["input_ids"] == image_id).long(), **pixels}

    @torch.no_grad()
    def reply(self, max_new_tokens: int) -> str:
        inputs = {key: value.to(self.torch_device) for key, value in self.build_inputs(self.messages,
                                                                                        self.images).items()}
        ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return self.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        prompt = _text(state, "prompt")
        if state.get("image") is None and prompt is None:
            raise StepInputError("Qwen2VLStep needs 'image' and/or 'prompt'")
        content: list[dict[str, Any]] = []
        if state.get("image") is not None:
            self.images.append(state_image(state))
            content.append({"type": "image"})
        content.append({"type": "text", "text": prompt or DESCRIBE_PROMPT})
        self.messages.append({"role": "user", "content": content})
        answer = self.reply(int(params.get("max_new_tokens", MAX_NEW_TOKENS)))
        self.messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return {**state, "result": answer}


class MiniGPT4Step(Step):
    reads = ("image", "minigpt4_text")
    writes = ("result",)

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from mixkit.pipelines.auto import load_pipeline

        self.pipeline = load_pipeline(str(model_dir), task="chat", device=device)

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        text = _text(state, "minigpt4_text")
        settings = self.pipeline.chat_settings
        if "max_new_tokens" in params:
            settings = settings.with_overrides(max_new_tokens=int(params["max_new_tokens"]))
        (answer,) = self.pipeline.respond([state_image(state)], [text], settings)
        return {**state, "result": answer}
