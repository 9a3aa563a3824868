"""The named BLIP-2 checkpoints mixkit knows, as plain data.

Every name maps to a weight source (a Hugging Face Hub repository and/or the LAVIS
``.pth`` files it was converted from), its preprocessing (image size, mean/std) and
its reference generation settings. Nothing registers itself on import: the entries
are one tuple, read by ``list_checkpoints`` / ``get_checkpoint``.

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

import difflib
from dataclasses import dataclass
from typing import Literal

CheckpointKind = Literal["stage1", "opt", "t5"]

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_LAVIS_BASE = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
EVA_VIT_G_URL = _LAVIS_BASE + "eva_vit_g.pth"

# LAVIS runs both zero-shot VQAv2 (OPT and Flan-T5) with this prompt:
# lavis/projects/blip2/eval/vqav2_zeroshot_{opt,flant5xl}_eval.yaml.
VQA_PROMPT = "Question: {} Short answer:"
CAPTION_PROMPT = "a photo of"


@dataclass(frozen=True)
class GenerationSettings:
    """Beam-search settings in ``transformers`` >= 4.38 terms (new tokens only)."""

    num_beams: int
    max_new_tokens: int
    min_new_tokens: int
    length_penalty: float
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ValueError(f"num_beams and max_new_tokens must be >= 1: {self}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must lie in [0, max_new_tokens]: {self}")


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


@dataclass(frozen=True)
class ReportedScore:
    """A published number for a checkpoint, with where it was published."""

    benchmark: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class CheckpointEntry:
    """One named checkpoint: where its weights come from and how to run it."""

    name: str
    description: str
    kind: CheckpointKind
    hf_repo: str | None
    lavis_url: str | None
    lavis_vit_url: str | None
    lavis_config: str
    language_model: str | None
    image_size: int
    prompt: str
    vqa_prompt: str | None
    caption: GenerationSettings | None
    vqa: GenerationSettings | None
    paper_scores: tuple[ReportedScore, ...] = ()
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    family: str = "blip2"

    def __post_init__(self) -> None:
        # Catch a mistyped entry at import rather than at generation time.
        if self.kind not in ("stage1", "opt", "t5"):
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if (self.kind == "stage1") != (self.language_model is None):
            raise ValueError(f"{self.name}: only stage-1 entries have no language model")
        if self.image_size <= 0 or self.image_size % 14:
            raise ValueError(f"{self.name}: image_size must be a multiple of the ViT's 14 px patches")

    @property
    def source(self) -> str:
        """Short label for tables: the Hub repo if there is one, else LAVIS."""
        return self.hf_repo if self.hf_repo is not None else "LAVIS .pth"


class UnknownCheckpointError(KeyError, ValueError):
    """A name that is not in the catalogue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError would print the message repr()'d, quotes and all.
        return self.message


def _stage1(name: str, description: str) -> CheckpointEntry:
    return CheckpointEntry(
        name=name,
        description=description,
        kind="stage1",
        hf_repo="Salesforce/blip2-itm-vit-g",
        lavis_url=_LAVIS_BASE + "blip2_pretrained.pth",
        lavis_vit_url=EVA_VIT_G_URL,
        lavis_config="lavis/configs/models/blip2/blip2_pretrain.yaml",
        language_model=None,
        image_size=224,
        prompt="",
        vqa_prompt=None,
        caption=None,
        vqa=None,
    )


def _pretrained(
    name: str, tag: str, language_model: str, hf_repo: str | None, scores: tuple[ReportedScore, ...] = ()
) -> CheckpointEntry:
    is_t5 = language_model.startswith("google/flan-t5")
    return CheckpointEntry(
        name=name,
        description=f"stage-2 pretrained, {language_model.split('/')[1]}, zero-shot caption/VQA",
        kind="t5" if is_t5 else "opt",
        hf_repo=hf_repo,
        lavis_url=_LAVIS_BASE + f"blip2_pretrained_{tag}.pth",
        lavis_vit_url=EVA_VIT_G_URL,
        lavis_config=f"lavis/configs/models/blip2/blip2_pretrain_{tag}.yaml",
        language_model=language_model,
        image_size=224,
        prompt="",
        vqa_prompt=VQA_PROMPT,
        caption=T5_CAPTION if is_t5 else OPT_CAPTION,
        vqa=T5_VQA if is_t5 else OPT_VQA,
        paper_scores=scores,
    )


def _caption(
    name: str, tag: str, language_model: str, hf_repo: str, scores: tuple[ReportedScore, ...] = ()
) -> CheckpointEntry:
    is_t5 = language_model.startswith("google/flan-t5")
    return CheckpointEntry(
        name=name,
        description=f"COCO caption fine-tuned, {language_model.split('/')[1]}, prompt {CAPTION_PROMPT!r}",
        kind="t5" if is_t5 else "opt",
        hf_repo=hf_repo,
        lavis_url=_LAVIS_BASE + f"blip2_caption_{tag}.pth",
        lavis_vit_url=None,  # fine-tuned with the ViT unfrozen: its weights are inside
        lavis_config=f"lavis/configs/models/blip2/blip2_caption_{tag}.yaml",
        language_model=language_model,
        image_size=364,
        prompt=CAPTION_PROMPT,
        vqa_prompt=VQA_PROMPT,
        caption=T5_CAPTION if is_t5 else OPT_CAPTION,
        vqa=T5_VQA if is_t5 else OPT_VQA,
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


_CHECKPOINTS: tuple[CheckpointEntry, ...] = (
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
    _pretrained(
        "blip2-pretrained-opt2.7b", "opt2.7b", "facebook/opt-2.7b", "Salesforce/blip2-opt-2.7b",
        (
            ReportedScore("vqav2_val", "accuracy", 51.88, _VQA_OPT_YAML),
            ReportedScore("vqav2_val", "accuracy", 53.5, "BLIP-2 paper Table 2"),
        ),
    ),
    _pretrained("blip2-pretrained-opt6.7b", "opt6.7b", "facebook/opt-6.7b", "Salesforce/blip2-opt-6.7b"),
    _pretrained(
        "blip2-pretrained-flant5xl", "flant5xl", "google/flan-t5-xl", "Salesforce/blip2-flan-t5-xl",
        (
            ReportedScore("vqav2_val", "accuracy", 63.13, _VQA_T5_YAML.format("vqav2")),
            ReportedScore("okvqa_test", "accuracy", 41.22, _VQA_T5_YAML.format("okvqa")),
            ReportedScore("gqa_balanced_testdev", "accuracy", 43.98, _VQA_T5_YAML.format("gqa")),
        ),
    ),
    _pretrained(
        "blip2-pretrained-flant5xxl", "flant5xxl", "google/flan-t5-xxl", "Salesforce/blip2-flan-t5-xxl"
    ),
    _caption(
        "blip2-caption-opt2.7b", "opt2.7b", "facebook/opt-2.7b", "Salesforce/blip2-opt-2.7b-coco",
        _lavis_caption_scores("caption_coco_opt2.7b_eval.yaml", 146.1, 43.8, 25.2)
        + _paper_caption_scores(145.8, 43.7),
    ),
    _caption(
        "blip2-caption-opt6.7b", "opt6.7b", "facebook/opt-6.7b", "Salesforce/blip2-opt-6.7b-coco",
        _lavis_caption_scores("caption_coco_opt6.7b_eval.yaml", 145.1, 43.4, 25.1)
        + _paper_caption_scores(145.2, 43.5),
    ),
    _caption(
        "blip2-caption-flant5xl", "flant5xl", "google/flan-t5-xl", "Salesforce/blip2-flan-t5-xl-coco",
        # LAVIS's caption_coco_flant5xl_eval.yaml is empty: only the paper's numbers.
        _paper_caption_scores(144.5, 42.4),
    ),
)


def list_checkpoints() -> list[CheckpointEntry]:
    """All catalogue entries, in catalogue order."""
    return list(_CHECKPOINTS)


def checkpoint_names() -> list[str]:
    return [entry.name for entry in _CHECKPOINTS]


def unknown_checkpoint_message(name: str) -> str:
    """'unknown checkpoint' plus the closest names and where to list them all."""
    message = f"unknown checkpoint {name!r}"
    close = difflib.get_close_matches(name, checkpoint_names(), n=3, cutoff=0.6)
    if close:
        quoted = [repr(c) for c in close]
        options = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        message += f"; did you mean {options}?"
    return message + " Run `mixkit models` to list the named checkpoints."


def get_checkpoint(name: str) -> CheckpointEntry:
    """The entry called ``name``; an unknown name raises with close matches."""
    for entry in _CHECKPOINTS:
        if entry.name == name:
            return entry
    raise UnknownCheckpointError(unknown_checkpoint_message(name))


def format_catalogue_table() -> str:
    """An aligned text table of the catalogue, as printed by ``mixkit models``."""
    header = ("NAME", "KIND", "IMAGE", "SOURCE", "DESCRIPTION")
    rows = [header] + [
        (e.name, e.kind, f"{e.image_size}px", e.source, e.description) for e in _CHECKPOINTS
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    return "\n".join(lines)
