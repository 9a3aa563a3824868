"""The named BLIP checkpoints, as plain data (read by `mixkit.models.catalogue`).

Sources (LAVIS at commit 506965b): image sizes and the LAVIS weight files from
`lavis/configs/models/blip_caption_base_coco.yaml`, `blip_vqav2.yaml`, `blip_itm_base.yaml`,
`blip_retrieval_coco.yaml`; prompts and lengths from `mixkit.models.blip.reference`; CLIP mean/std from
`lavis/processors/blip_processors.py::BlipImageBaseProcessor`. The Hub repositories are the `transformers`
conversions of BLIP's releases named in `transformers`' BLIP docstrings (`modeling_blip.py` examples). LAVIS
`.pth` files are converted with `mixkit.models.blip.convert_lavis.convert_lavis_blip` (see docs/blip.md).
"""

from __future__ import annotations

from mixkit.models.blip.reference import lavis_settings
from mixkit.models.entry import CheckpointEntry

_LAVIS = "https://storage.googleapis.com/sfr-vision-language-research/"


def _entry(name: str, description: str, kind: str, tasks: tuple[str, ...], hf_repo: str, image_size: int,
           lavis_config: str, generative: bool) -> CheckpointEntry:
    return CheckpointEntry(
        name=name, description=description, family="blip", kind=kind, tasks=tasks, hf_repo=hf_repo,
        # None: `mixkit convert lavis` is BLIP-2's converter; BLIP's is a library call (docs/blip.md).
        lavis_url=None, lavis_vit_url=None, lavis_config=lavis_config, language_model=None,
        image_size=image_size, settings=lavis_settings() if generative else None,
    )


BLIP_CHECKPOINTS: tuple[CheckpointEntry, ...] = (
    _entry("blip-caption-base", "BLIP ViT-B captioning, prompt 'a picture of ' (LAVIS blip_caption base_coco)",
           "caption", ("caption",), "Salesforce/blip-image-captioning-base", 384,
           "lavis/configs/models/blip_caption_base_coco.yaml", True),
    _entry("blip-vqa-base", "BLIP ViT-B VQAv2: generation or answer-list ranking (LAVIS blip_vqa vqav2)",
           "vqa", ("vqa",), "Salesforce/blip-vqa-base", 480, "lavis/configs/models/blip_vqav2.yaml", True),
    _entry("blip-itm-base-coco", "BLIP ViT-B COCO retrieval: ITC, ITM, zero-shot classify (LAVIS blip_retrieval)",
           "retrieval", ("retrieval", "itm", "itc", "classify", "match"), "Salesforce/blip-itm-base-coco", 384,
           "lavis/configs/models/blip_retrieval_coco.yaml", False),
)

# LAVIS weight files of the same models, for `convert_lavis_blip` (from the yamls named above).
LAVIS_FILES = {
    "blip-caption-base": _LAVIS + "LAVIS/models/BLIP/blip_coco_caption_base.pth",
    "blip-vqa-base": _LAVIS + "BLIP/models/model_base_vqa_capfilt_large.pth",
    "blip-itm-base-coco": _LAVIS + "LAVIS/models/BLIP/blip_coco_retrieval.pth",
}
