"""InstructBLIP's reference prompts and generation settings, as LAVIS runs them (commit 506965b), in new-token terms.

Sources (LAVIS 506965b):
- chat (free-form instructions): the defaults of `generate` in `lavis/models/blip2_models/blip2_vicuna_instruct.py`
  and `blip2_t5_instruct.py`: num_beams=5, max_length=256, min_length=1, repetition_penalty=1.5,
  length_penalty=1 (top_p=0.9 and temperature=1 only matter with sampling, which is off by default);
- captions: `lavis/projects/instructblip/caption_coco_{flant5xl,flant5xxl,vicuna7b,vicuna13b}_eval_test.yaml`:
  prompt "A short image caption.", num_beams 5, max_len 80, min_len 10, length_penalty 1; the repetition
  penalty is the captioning task's default, 1.15 (`lavis/tasks/captioning.py`, `run_cfg.get(..., 1.15)`);
- short-answer VQA: `lavis/projects/instructblip/qa_okvqa_*_eval.yaml`: prompt "Question: {} Short Answer:",
  num_beams 5, max_len 10, min_len 1, length_penalty -1; `predict_answers` passes no repetition penalty, so
  `generate`'s 1.5 applies.

Length semantics (as for BLIP-2, see docs/instructblip.md): the Vicuna model calls the LLM's
`generate(inputs_embeds=..., max_length=L, min_length=M)`; under LAVIS's pinned `transformers` the generated ids
start with a placeholder token that both limits count, so at most L-1 and at least M-1 new tokens. The Flan-T5
model passes `max_new_tokens=L` (L new tokens) and `min_length=M`, which counts the decoder start token (M-1 new).
"""

from __future__ import annotations

from mixkit.models.settings import GenerationSettings, PredictionSettings

CAPTION_PROMPT = "A short image caption."
VQA_PROMPT = "Question: {} Short Answer:"

# generate()'s defaults: beams 5, max_length 256, min_length 1, repetition 1.5, length penalty 1.
DECODER_ONLY_CHAT = GenerationSettings(num_beams=5, max_new_tokens=255, min_new_tokens=0, length_penalty=1.0,
                                       repetition_penalty=1.5)
T5_CHAT = GenerationSettings(num_beams=5, max_new_tokens=256, min_new_tokens=0, length_penalty=1.0,
                             repetition_penalty=1.5)
# COCO caption eval: max_len 80, min_len 10, length penalty 1, repetition 1.15 (captioning task default).
DECODER_ONLY_CAPTION = GenerationSettings(num_beams=5, max_new_tokens=79, min_new_tokens=9, length_penalty=1.0,
                                          repetition_penalty=1.15)
T5_CAPTION = GenerationSettings(num_beams=5, max_new_tokens=80, min_new_tokens=9, length_penalty=1.0,
                                repetition_penalty=1.15)
# OK-VQA eval: max_len 10, min_len 1, length penalty -1, repetition 1.5 (generate's default).
DECODER_ONLY_VQA = GenerationSettings(num_beams=5, max_new_tokens=9, min_new_tokens=0, length_penalty=-1.0,
                                      repetition_penalty=1.5)
T5_VQA = GenerationSettings(num_beams=5, max_new_tokens=10, min_new_tokens=0, length_penalty=-1.0,
                            repetition_penalty=1.5)

# LAVIS tokenizes the instruction for the Q-Former with max_txt_len 128, truncating on the left
# (`init_tokenizer(truncation_side="left")` and `max_txt_len=128` in both model files).
QFORMER_MAX_LENGTH = 128


def reference_settings(encoder_decoder: bool, chat: GenerationSettings | None = None) -> PredictionSettings:
    """LAVIS's settings for an InstructBLIP with a Flan-T5 (`encoder_decoder`) or Vicuna/Llama LLM; `chat`
    replaces the chat defaults (a `transformers` folder's own `generation_config.json`)."""
    if encoder_decoder:
        return PredictionSettings(CAPTION_PROMPT, VQA_PROMPT, T5_CAPTION, T5_VQA, chat or T5_CHAT)
    return PredictionSettings(CAPTION_PROMPT, VQA_PROMPT, DECODER_ONLY_CAPTION, DECODER_ONLY_VQA,
                              chat or DECODER_ONLY_CHAT)
