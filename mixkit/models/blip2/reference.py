"""BLIP-2's reference generation settings, as LAVIS runs them (commit 506965b), in new-token terms."""

from __future__ import annotations

from mixkit.models.settings import GenerationSettings, PredictionSettings

# LAVIS runs both zero-shot VQAv2 (OPT and Flan-T5) with this prompt:
# lavis/projects/blip2/eval/vqav2_zeroshot_{opt,flant5xl}_eval.yaml.
VQA_PROMPT = "Question: {} Short answer:"
CAPTION_PROMPT = "a photo of"

# LAVIS calls generate(max_length=30, min_length=8) for captions (eval yamls
# caption_coco_opt{2.7b,6.7b}_eval.yaml: num_beams 5, max_len 30, min_len 8). Its
# pinned transformers 4.33 counts a placeholder first token in both limits for OPT
# (inputs_embeds only), so at most 29 / at least 7 new tokens. blip2_t5.py passes
# max_new_tokens=30 but min_length=8, which counts the decoder start token: 7 new.
# Length penalty 1.0 is the model's generate() default; the captioning task passed
# none when the published scores were made (lavis/tasks/captioning.py before
# 71a2da9, Dec 2023, which added repetition_penalty 1.15 / length_penalty 0 defaults).
OPT_CAPTION = GenerationSettings(num_beams=5, max_new_tokens=29, min_new_tokens=7, length_penalty=1.0)
T5_CAPTION = GenerationSettings(num_beams=5, max_new_tokens=30, min_new_tokens=7, length_penalty=1.0)

# Zero-shot VQA: num_beams 5, max_len 10, min_len 1 (vqav2_zeroshot_*_eval.yaml);
# predict_answers passes max_new_tokens=max_len, and min_length=1 is met by the
# placeholder / decoder start token, so no minimum. Length penalty is not in the
# yamls: it is predict_answers' default, 0 in blip2_opt.py and -1 in blip2_t5.py.
OPT_VQA = GenerationSettings(num_beams=5, max_new_tokens=10, min_new_tokens=0, length_penalty=0.0)
T5_VQA = GenerationSettings(num_beams=5, max_new_tokens=10, min_new_tokens=0, length_penalty=-1.0)


def reference_settings(encoder_decoder: bool, prompt: str = "") -> PredictionSettings:
    """LAVIS's settings for a BLIP-2 with a Flan-T5 (`encoder_decoder`) or OPT language model; `prompt` is the
    caption prompt ("" for the pretrained checkpoints and for folders that name none)."""
    if encoder_decoder:
        return PredictionSettings(prompt, VQA_PROMPT, T5_CAPTION, T5_VQA)
    return PredictionSettings(prompt, VQA_PROMPT, OPT_CAPTION, OPT_VQA)
