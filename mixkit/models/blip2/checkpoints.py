"""The named BLIP-2 checkpoints, as plain data (read by `mixkit.models.catalogue`).

Every name maps to a weight source (a Hugging Face Hub repository and/or the LAVIS
``.pth`` files it was converted from), its preprocessing (image size, mean/std) and
its reference generation settings (`mixkit.models.blip2.reference`).

Sources (LAVIS at commit 506965b unless said otherwise):
- URLs, image sizes, prompts, language models: ``lavis/configs/models/blip2/<file>.yaml``
  (named per entry in ``lavis_config``).
- ``eva_vit_g.pth``: ``lavis/models/eva_vit.py::create_eva_vit_g``. The stage-1 and
  pretrained ``.pth`` files hold only what was trainable (the ViT was frozen), so they
  need it; the caption ones were trained with the ViT unfrozen and carry its weights.
- CLIP mean/std: ``lavis/processors/blip_processors.py::BlipImageBaseProcessor``.
- Hub ids: ``transformers``' ``convert_blip_2_original_to_pytorch.py`` maps each Hub
  repo to the LAVIS model type it was converted from (e.g. ``blip2-itm-vit-g`` <-
  ``blip2_image_text_matching/pretrain``); the repos were checked on huggingface.co.
"""

from __future__ import annotations

from mixkit.models.blip2.reference import CAPTION_PROMPT, reference_settings
from mixkit.models.entry import CheckpointEntry, ReportedScore

_LAVIS_BASE = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
EVA_VIT_G_URL = _LAVIS_BASE + "eva_vit_g.pth"


def _stage1(name: str, description: str) -> CheckpointEntry:
    return CheckpointEntry(
        name=name,
        description=description,
        family="blip2",
        kind="stage1",
        tasks=("retrieval", "itm", "itc", "classify", "match"),
        hf_repo="Salesforce/blip2-itm-vit-g",
        lavis_url=_LAVIS_BASE + "blip2_pretrained.pth",
        lavis_vit_url=EVA_VIT_G_URL,
        lavis_config="lavis/configs/models/blip2/blip2_pretrain.yaml",
        language_model=None,
        image_size=224,
        settings=None,
    )


def _stage2(name: str, tag: str, language_model: str, hf_repo: str | None, caption_finetuned: bool,
            scores: tuple[ReportedScore, ...] = ()) -> CheckpointEntry:
    """A stage-2 entry: the pretrained one (224 px, no caption prompt, needs the separate EVA ViT file) or its
    COCO caption fine-tuned child (364 px, prompt "a photo of", the ViT weights inside)."""
    is_t5 = language_model.startswith("google/flan-t5")
    lm_name = language_model.split("/")[1]
    if caption_finetuned:
        file_stem, config_stem = "blip2_caption", "blip2_caption"
        description = f"COCO caption fine-tuned, {lm_name}, prompt {CAPTION_PROMPT!r}"
    else:
        file_stem, config_stem = "blip2_pretrained", "blip2_pretrain"
        description = f"stage-2 pretrained, {lm_name}, zero-shot caption/VQA"
    return CheckpointEntry(
        name=name,
        description=description,
        family="blip2",
        kind="t5" if is_t5 else "opt",
        tasks=("caption", "vqa"),
        hf_repo=hf_repo,
        lavis_url=_LAVIS_BASE + f"{file_stem}_{tag}.pth",
        lavis_vit_url=None if caption_finetuned else EVA_VIT_G_URL,  # fine-tuned with the ViT unfrozen
        lavis_config=f"lavis/configs/models/blip2/{config_stem}_{tag}.yaml",
        language_model=language_model,
        image_size=364 if caption_finetuned else 224,
        settings=reference_settings(encoder_decoder=is_t5, prompt=CAPTION_PROMPT if caption_finetuned else ""),
        paper_scores=scores,
    )


_VQA_OPT_YAML = "LAVIS lavis/projects/blip2/eval/vqav2_zeroshot_opt_eval.yaml (comment)"
_VQA_T5_YAML = "LAVIS lavis/projects/blip2/eval/{}_zeroshot_flant5xl_eval.yaml (comment)"
_PAPER_TABLE3 = "BLIP-2 paper (arXiv 2301.12597) Table 3, via paperswithcode"


def _lavis_caption_scores(yaml: str, cider: float, bleu4: float, spice: float) -> tuple[ReportedScore, ...]:
    source = f"LAVIS lavis/projects/blip2/eval/{yaml} (comment; stored there as fractions)"
    return (
        ReportedScore("coco_karpathy_test", "CIDEr", cider, source),
        ReportedScore("coco_karpathy_test", "BLEU-4", bleu4, source),
        ReportedScore("coco_karpathy_test", "SPICE", spice, source),
    )


def _paper_caption_scores(cider: float, bleu4: float) -> tuple[ReportedScore, ...]:
    return (
        ReportedScore("coco_karpathy_test", "CIDEr", cider, _PAPER_TABLE3),
        ReportedScore("coco_karpathy_test", "BLEU-4", bleu4, _PAPER_TABLE3),
    )


def _checked(entries: tuple[CheckpointEntry, ...]) -> tuple[CheckpointEntry, ...]:
    """BLIP-2's own rules on its entries, checked at import rather than at generation time."""
    for entry in entries:
        if entry.kind not in ("stage1", "opt", "t5"):
            raise ValueError(f"{entry.name}: unknown kind {entry.kind!r}")
        if (entry.kind == "stage1") != (entry.language_model is None):
            raise ValueError(f"{entry.name}: only stage-1 entries have no language model")
        if entry.image_size % 14:
            raise ValueError(f"{entry.name}: image_size must be a multiple of the ViT's 14 px patches")
    return entries


BLIP2_CHECKPOINTS: tuple[CheckpointEntry, ...] = _checked((
    _stage1(
        "blip2-stage1",
        "stage-1 Q-Former + EVA ViT-g (ITC/ITM/ITG), retrieval and matching",
    ),
    # The paper's stage 2 starts from the stage-1 model trained on the full
    # pretraining data; LAVIS publishes exactly one such file, blip2_pretrained.pth,
    # and its pretrain_stage2.yaml (lavis/projects/blip2/train/) loads it. So this
    # name resolves to the same weights as blip2-stage1: it names the role
    # ("initialise stage 2 from here"), not different weights.
    _stage1(
        "blip2-stage2",
        "stage-2 starting point: the stage-1 weights (same files as blip2-stage1)",
    ),
    _stage2(
        "blip2-pretrained-opt2.7b", "opt2.7b", "facebook/opt-2.7b", "Salesforce/blip2-opt-2.7b", False,
        (
            ReportedScore("vqav2_val", "accuracy", 51.88, _VQA_OPT_YAML),
            ReportedScore("vqav2_val", "accuracy", 53.5, "BLIP-2 paper Table 2"),
        ),
    ),
    _stage2("blip2-pretrained-opt6.7b", "opt6.7b", "facebook/opt-6.7b", "Salesforce/blip2-opt-6.7b", False),
    _stage2(
        "blip2-pretrained-flant5xl", "flant5xl", "google/flan-t5-xl", "Salesforce/blip2-flan-t5-xl", False,
        (
            ReportedScore("vqav2_val", "accuracy", 63.13, _VQA_T5_YAML.format("vqav2")),
            ReportedScore("okvqa_test", "accuracy", 41.22, _VQA_T5_YAML.format("okvqa")),
            ReportedScore("gqa_balanced_testdev", "accuracy", 43.98, _VQA_T5_YAML.format("gqa")),
        ),
    ),
    _stage2("blip2-pretrained-flant5xxl", "flant5xxl", "google/flan-t5-xxl", "Salesforce/blip2-flan-t5-xxl", False),
    _stage2(
        "blip2-caption-opt2.7b", "opt2.7b", "facebook/opt-2.7b", "Salesforce/blip2-opt-2.7b-coco", True,
        _lavis_caption_scores("caption_coco_opt2.7b_eval.yaml", 146.1, 43.8, 25.2)
        + _paper_caption_scores(145.8, 43.7),
    ),
    _stage2(
        "blip2-caption-opt6.7b", "opt6.7b", "facebook/opt-6.7b", "Salesforce/blip2-opt-6.7b-coco", True,
        _lavis_caption_scores("caption_coco_opt6.7b_eval.yaml", 145.1, 43.4, 25.1)
        + _paper_caption_scores(145.2, 43.5),
    ),
    _stage2(
        "blip2-caption-flant5xl", "flant5xl", "google/flan-t5-xl", "Salesforce/blip2-flan-t5-xl-coco", True,
        # LAVIS's caption_coco_flant5xl_eval.yaml is empty: only the paper's numbers.
        _paper_caption_scores(144.5, 42.4),
    ),
))
