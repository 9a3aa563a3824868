"""The named ALBEF checkpoints, as plain data (read by `mixkit.models.catalogue`).

Sources (LAVIS at commit 506965b): `lavis/configs/models/albef_feature_extractor.yaml` (the pretrained ALBEF.pth,
224 px eval), `albef_retrieval_coco.yaml`, `albef_retrieval_flickr.yaml`, `albef_vqav2.yaml` (384 px; weight URLs
below); CLIP mean/std from `lavis/processors/blip_processors.py::BlipImageBaseProcessor` (ALBEF uses the
`blip_image_eval` processor). There are no Hub conversions: a LAVIS file becomes a folder with
`mixkit.models.albef.convert_lavis.convert_lavis_albef` (docs/albef.md), put at `$MIXKIT_HOME/checkpoints/<name>`.
"""

from __future__ import annotations

from mixkit.models.blip.reference import folder_settings
from mixkit.models.entry import CheckpointEntry

_MATCHING = ("retrieval", "itm", "itc", "classify", "match")


def _entry(name: str, description: str, kind: str, tasks: tuple[str, ...], image_size: int,
           lavis_config: str) -> CheckpointEntry:
    return CheckpointEntry(
        name=name, description=description, family="albef", kind=kind, tasks=tasks, hf_repo=None,
        lavis_url=None, lavis_vit_url=None, lavis_config=lavis_config, language_model=None, image_size=image_size,
        # VQA ranks an answer list (nothing is generated); the entry check wants settings for a "vqa" task.
        settings=folder_settings() if "vqa" in tasks else None,
    )


ALBEF_CHECKPOINTS: tuple[CheckpointEntry, ...] = (
    _entry("albef-pretrain-base", "ALBEF ViT-B 14M pretrained: ITC, ITM, MLM, zero-shot classify (LAVIS albef)",
           "pretrain", _MATCHING, 224, "lavis/configs/models/albef_feature_extractor.yaml"),
    _entry("albef-retrieval-coco", "ALBEF ViT-B COCO retrieval: ITC top-k then ITM (LAVIS albef_retrieval coco)",
           "retrieval", _MATCHING, 384, "lavis/configs/models/albef_retrieval_coco.yaml"),
    _entry("albef-retrieval-flickr", "ALBEF ViT-B Flickr30k retrieval (LAVIS albef_retrieval flickr)",
           "retrieval", _MATCHING, 384, "lavis/configs/models/albef_retrieval_flickr.yaml"),
    _entry("albef-vqav2", "ALBEF ViT-B VQAv2: answer-list ranking (LAVIS albef_vqa vqav2)",
           "vqa", ("vqa",), 384, "lavis/configs/models/albef_vqav2.yaml"),
)

# LAVIS weight files of the same models (from the yamls named above) and the architecture each converts to.
LAVIS_FILES = {
    "albef-pretrain-base": ("https://storage.googleapis.com/sfr-pcl-data-research/ALBEF/ALBEF.pth",
                            "AlbefForPreTraining"),
    "albef-retrieval-coco": ("https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/ALBEF/"
                             "albef_coco_retrieval_lavis.pt", "AlbefForRetrieval"),
    "albef-retrieval-flickr": ("https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/ALBEF/"
                               "albef_flickr_retrieval_lavis.pt", "AlbefForRetrieval"),
    "albef-vqav2": ("https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/ALBEF/"
                    "albef_vqav2_lavis.pt", "AlbefForQuestionAnswering"),
}
