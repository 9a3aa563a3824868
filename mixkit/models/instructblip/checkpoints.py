"""The named InstructBLIP checkpoints, as plain data (read by `mixkit.models.catalogue`).

Sources (LAVIS at commit 506965b):
- LAVIS `.pth` URLs, image size and language models: `lavis/configs/models/blip2/blip2_instruct_{flant5xl,
  flant5xxl,vicuna7b,vicuna13b}.yaml`. The `*_trimmed.pth` files hold what was trained (Q-Former with its
  instruction embeddings, queries, `ln_vision`, projection); the frozen EVA ViT-g comes from `eva_vit_g.pth` and
  the frozen LLM from its own weights (`google/flan-t5-*`, Vicuna v1.1).
- Hub ids: the `Salesforce/instructblip-*` repositories `transformers`' `convert_instructblip_original_to_pytorch.py`
  writes (checked on huggingface.co), in `InstructBlipForConditionalGeneration`'s layout.
- Prompts and generation settings: `mixkit.models.instructblip.reference`.
"""

from __future__ import annotations

from mixkit.models.blip2.checkpoints import EVA_VIT_G_URL
from mixkit.models.entry import CheckpointEntry
from mixkit.models.instructblip.reference import reference_settings

_LAVIS_BASE = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/InstructBLIP/"


def _entry(name: str, tag: str, file_tag: str, language_model: str, hf_repo: str) -> CheckpointEntry:
    is_t5 = language_model.startswith("google/flan-t5")
    return CheckpointEntry(
        name=name,
        description=f"instruction-tuned, {language_model.rsplit('/', 1)[-1]}: chat, caption, VQA",
        family="instructblip",
        kind="t5" if is_t5 else "vicuna",
        tasks=("chat", "caption", "vqa"),
        hf_repo=hf_repo,
        lavis_url=_LAVIS_BASE + f"instruct_blip_{file_tag}_trimmed.pth",
        lavis_vit_url=EVA_VIT_G_URL,
        lavis_config=f"lavis/configs/models/blip2/blip2_instruct_{tag}.yaml",
        language_model=language_model,
        image_size=224,
        settings=reference_settings(encoder_decoder=is_t5),
    )


INSTRUCTBLIP_CHECKPOINTS: tuple[CheckpointEntry, ...] = (
    _entry("instructblip-flan-t5-xl", "flant5xl", "flanxl", "google/flan-t5-xl", "Salesforce/instructblip-flan-t5-xl"),
    _entry("instructblip-flan-t5-xxl", "flant5xxl", "flanxxl", "google/flan-t5-xxl",
           "Salesforce/instructblip-flan-t5-xxl"),
    _entry("instructblip-vicuna-7b", "vicuna7b", "vicuna7b", "lmsys/vicuna-7b-v1.1", "Salesforce/instructblip-vicuna-7b"),
    _entry("instructblip-vicuna-13b", "vicuna13b", "vicuna13b", "lmsys/vicuna-13b-v1.1",
           "Salesforce/instructblip-vicuna-13b"),
)
