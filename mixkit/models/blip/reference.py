"""BLIP's reference prompts and generation settings, as LAVIS runs them (commit 506965b), in new-token terms.

LAVIS passes `max_length` / `min_length` to `generate` with the prompt already in `input_ids`; its pinned
`transformers` 4.33 counts every input token in both limits. mixkit counts only the tokens after the `[DEC]`
start token and the prompt (`max_new_tokens`), so the limits below are LAVIS's minus the prompt's length.
"""

from __future__ import annotations

from mixkit.models.settings import GenerationSettings, PredictionSettings

# lavis/configs/models/blip_caption_{base,large}_coco.yaml: `prompt: "a picture of "`; blip_caption.py tokenizes
# it, puts [DEC] in place of [CLS] and drops the final [SEP]: [DEC] a picture of = 4 input tokens.
CAPTION_PROMPT = "a picture of "
_CAPTION_PROMPT_TOKENS = 4
# lavis/projects/blip/eval/caption_coco_eval.yaml: num_beams 3, max_len 20, min_len 5 (blip_caption.generate's
# own defaults, 30 / 10, are not what the published scores used). Length and repetition penalties: 1.0 (the
# generate defaults; the yaml sets none).
CAPTION = GenerationSettings(num_beams=3, max_new_tokens=20 - _CAPTION_PROMPT_TOKENS,
                             min_new_tokens=5 - _CAPTION_PROMPT_TOKENS, length_penalty=1.0)
# lavis/projects/blip/eval/vqav2_eval.yaml: num_beams 3, max_len 10, min_len 1 for "generate";
# blip_vqa._generate_answers starts from [DEC] alone, so at most 9 new tokens and no minimum.
VQA = GenerationSettings(num_beams=3, max_new_tokens=10 - 1, min_new_tokens=max(0, 1 - 1), length_penalty=1.0)
# BLIP encodes the question itself (with [ENC] first): no template around it (BLIP-2's is never applied).
VQA_TEMPLATE = "{}"
# lavis/projects/blip/eval/vqav2_eval.yaml: inference_method "rank" scores the 128 answers whose first token is
# likeliest (num_ans_candidates).
NUM_ANSWER_CANDIDATES = 128

# A folder with no mixkit settings (e.g. written by `transformers`): no prompt and `transformers`' own generate
# defaults for BLIP: greedy, and with no length given `transformers` 5.x generates "20 new tokens"
# (generation/utils.py `_prepare_generated_length`: default max_length 20 + the input length).
TRANSFORMERS_DEFAULT = GenerationSettings(num_beams=1, max_new_tokens=20, min_new_tokens=0, length_penalty=1.0)


def lavis_settings() -> PredictionSettings:
    """What a catalogue checkpoint generates with: LAVIS's caption prompt, caption and VQA settings."""
    return PredictionSettings(CAPTION_PROMPT, VQA_TEMPLATE, CAPTION, VQA)


def folder_settings() -> PredictionSettings:
    """A folder that names no settings: no prompt, `transformers`' defaults."""
    return PredictionSettings("", VQA_TEMPLATE, TRANSFORMERS_DEFAULT, TRANSFORMERS_DEFAULT)
