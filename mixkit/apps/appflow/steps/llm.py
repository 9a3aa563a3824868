"""Language-model steps (`transformers` causal LMs): answer a prompt, or split a free-form inpainting request into
the object to find (`prompt`) and what to paint there (`inpaint_prompt`).

They stand where PaddleMIX's AppFlow runs ChatGLM-6B (`text2text_generation.py::ChatGlmTask`). Decoding is greedy
with `max_new_tokens` (an app parameter), so the text equals `model.generate` on the same ids. A tokenizer with a
chat template gets the prompt as one user message (`apply_chat_template`, generation prompt added); one without
gets the plain prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mixkit.apps.appflow.step import Step
from mixkit.apps.appflow.steps.diffusion import state_text
from mixkit.pipelines.common import pick_device

DEFAULT_MAX_NEW_TOKENS = 256


class TextGenerationStep(Step):
    """`prompt` -> the model's reply in `result`."""

    reads = ("prompt",)
    writes = ("result",)

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch_device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(self.torch_device)
        self.model.eval()

    def input_ids(self, prompt: str) -> torch.Tensor:
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}]
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                     return_tensors="pt")["input_ids"]
        else:
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        return ids.to(self.torch_device)

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> str:
        ids = self.input_ids(prompt)
        pad = self.tokenizer.pad_token_id
        output = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=int(max_new_tokens),
                                     pad_token_id=self.tokenizer.eos_token_id if pad is None else pad)
        return self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        reply = self.generate(state_text(state, "prompt"), params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        return {**state, "result": reply}


# The instruction is PaddleMIX's (the comment in `text2text_generation.py`), with the answer format spelt out.
SPLIT_INSTRUCTION = (
    "Given caption, extract the main object to be replaced and mark it as 'main_object', extract the remaining "
    "part as 'other prompt'. Return main_object, other prompt in English, one per line, as\n"
    "main_object: ...\nother prompt: ...\nGiven caption: {}.")


def split_inpaint_reply(reply: str) -> tuple[str, str]:
    """(object to find, inpainting prompt) from the LLM's two lines. As PaddleMIX's ChatGlmTask: the first line's
    text after its last ":" and the last line's; a label-less single line gives the same text twice."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("the language model's reply is empty: no object or inpainting prompt to read")
    first, last = (line.split(":")[-1].strip() for line in (lines[0], lines[-1]))
    return first, last


class InpaintRequestStep(TextGenerationStep):
    """A free-form `prompt` ("replace the dog with a cat") -> `prompt` (the object) and `inpaint_prompt`; the LLM's
    raw reply is kept under `llm_reply`."""

    writes = ("prompt", "inpaint_prompt", "llm_reply")

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        request = state_text(state, "prompt")
        reply = self.generate(SPLIT_INSTRUCTION.format(request),
                              params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        target, inpaint_prompt = split_inpaint_reply(reply)
        return {**state, "prompt": target or request, "inpaint_prompt": inpaint_prompt or request,
                "llm_reply": reply}
