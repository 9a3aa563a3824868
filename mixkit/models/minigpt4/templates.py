"""MiniGPT-4 / MiniGPT-v2 conversation templates, stop words, response cleaning and reference settings.

Every string here is read from Vision-CAIR/MiniGPT-4 at commit d94738a (docs/minigpt4.md cites each):

- `minigpt4/conversation/conversation.py`: `CONV_VISION_Vicuna0`, `CONV_VISION_LLama2`, `CONV_VISION_minigptv2`,
  `Conversation.get_prompt` (SINGLE style: system + sep, then role + message + sep per filled message and the
  bare role for the turn to generate), `Chat.upload_img` (the user turn "<Img><ImageHere></Img>"), `Chat.ask`
  (the first question joins that image message with a space), `Chat.answer` (cut at "###", keep what follows
  the last "Assistant:") and `Chat.answer_prepare` (the generation defaults);
- `demo.py`: stop on the "###" pieces (LLaMA ids [835] and [2277, 29937]), at most 300 new tokens;
- `demo_v2.py`: stop on `</s>` (Chat's default), at most 500 new tokens;
- `eval_scripts/eval_vqa.py`, `eval_ref.py`, `minigpt4/common/eval_utils.py::prepare_texts`,
  `minigpt4/datasets/datasets/*.py`: MiniGPT-v2's task prompts, greedy decoding, 20 new tokens
  (`eval_configs/minigptv2_benchmark_evaluation.yaml`), and `MiniGPTBase.generate`'s cleaning.

This module imports neither torch nor `transformers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mixkit.models.settings import GenerationSettings, PredictionSettings

IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_MESSAGE = "<Img><ImageHere></Img>"  # Chat.upload_img
_IMAGE_SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I "
                 "provide it to you. Please answer my questions.")


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    system: str
    user_role: str
    assistant_role: str
    sep: str
    stop_words: tuple[str, ...]  # generation stops once the output ends with one of these (besides eos)
    training_template: str  # the `prompt_template` of the stage-2 / fine-tuning configs, {} = the instruction

    def prompt(self, messages: Sequence[tuple[str, str | None]]) -> str:
        """`Conversation.get_prompt`, SINGLE style: messages are (role, text), text None for the turn the model
        writes next."""
        text = self.system + self.sep
        for role, message in messages:
            text += role + message + self.sep if message else role
        return text


TEMPLATES: dict[str, ConversationTemplate] = {
    # CONV_VISION_Vicuna0; training: train_configs/minigpt4_stage2_finetune.yaml prompt_template
    "vicuna0": ConversationTemplate("vicuna0", _IMAGE_SYSTEM, "Human: ", "Assistant: ", "###", ("###",),
                                    "###Human: {} ###Assistant: "),
    # CONV_VISION_LLama2 (demo.py stops on "###" for both MiniGPT-4 variants); training:
    # train_configs/minigpt4_llama2_stage2_finetune.yaml prompt_template
    "llama2": ConversationTemplate("llama2", _IMAGE_SYSTEM, "<s>[INST] ", " [/INST] ", "", ("###",),
                                   "[INST] {} [/INST] "),
    # CONV_VISION_minigptv2 (eval scripts also set system ""); training: minigpt_v2.py prompt_template
    "minigptv2": ConversationTemplate("minigptv2", "", "<s>[INST] ", " [/INST]", "", (),
                                      "[INST] {} [/INST]"),
}


def conversation_prompt(template: ConversationTemplate, turns: Sequence[tuple[str, str]],
                        with_image: bool = True) -> str:
    """The prompt `Chat` builds for `turns` ((role, text) with roles "user"/"assistant", alternating, ending
    with the user's): the image message joined to the first question by a space, the history's answers
    as `Chat.answer` stored them, and the assistant role left open."""
    messages: list[tuple[str, str | None]] = []
    for index, (role, text) in enumerate(turns):
        if index == 0 and with_image:
            text = f"{IMAGE_MESSAGE} {text}"
        messages.append((template.user_role if role == "user" else template.assistant_role, text))
    messages.append((template.assistant_role, None))
    return template.prompt(messages)


def prompt_segments(prompt: str) -> list[str]:
    """The text around each `<ImageHere>`; `get_context_emb` tokenizes each separately, BOS on the first only."""
    return prompt.split(IMAGE_PLACEHOLDER)


def chat_response(text: str) -> str:
    """`Chat.answer`'s cleaning of the decoded output."""
    return text.split("###")[0].split("Assistant:")[-1].strip()


def generate_response(text: str) -> str:
    """`MiniGPTBase.generate`'s cleaning (the eval scripts' path), then their `<unk>` removal."""
    text = text.split("</s>")[0].replace("<s>", "")
    return text.split("[/INST]")[-1].replace("<unk>", "").strip()


# ---------------------------------------------------------------- task prompts (MiniGPT-v2's identifiers)

TASK_IDENTIFIERS = ("[vqa]", "[caption]", "[grounding]", "[refer]", "[detection]", "[identify]")
V2_CAPTION_PROMPT = "[caption] please describe this image?"  # datasets/datasets/coco_caption.py
V2_VQA_PROMPT = "[vqa] Based on the image, respond to this question with a short answer: {}"  # vqa_datasets.py
V2_REFER_PROMPT = "[refer] give me the location of {}"  # coco_caption.py RefCOCOEvalData
MINIGPT4_CAPTION_PROMPT = "Describe this image in detail."  # prompts/alignment.txt, first line
MINIGPT4_VQA_PROMPT = "{}"  # no official VQA prompt: the question is the chat message


def chat_settings(template_name: str) -> GenerationSettings:
    """`Chat.answer_prepare` defaults (1 beam, repetition penalty 1.05, length penalty 1) with the demos'
    `max_new_tokens` (demo.py 300, demo_v2.py 500). The demos sample (top_p 0.9, temperature 1); mixkit
    decodes deterministically (greedy or beams)."""
    longest = 500 if template_name == "minigptv2" else 300
    return GenerationSettings(num_beams=1, max_new_tokens=longest, min_new_tokens=0, length_penalty=1.0,
                              repetition_penalty=1.05)


def reference_settings(template_name: str) -> PredictionSettings:
    """Caption and VQA prompts and settings. MiniGPT-v2: its task prompts, greedy, 20 new tokens, no
    repetition penalty (the benchmark eval config and `MiniGPTBase.generate` defaults). MiniGPT-4 has no
    official caption or VQA evaluation: the stage-2 instruction and the question as chat messages, with the
    chat settings."""
    if template_name == "minigptv2":
        short = GenerationSettings(num_beams=1, max_new_tokens=20, min_new_tokens=0, length_penalty=1.0)
        return PredictionSettings(V2_CAPTION_PROMPT, V2_VQA_PROMPT, short, short)
    chat = chat_settings(template_name)
    return PredictionSettings(MINIGPT4_CAPTION_PROMPT, MINIGPT4_VQA_PROMPT, chat, chat)
