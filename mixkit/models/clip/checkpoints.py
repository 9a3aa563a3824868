"""The named CLIP checkpoints, as plain data (read by `mixkit.models.catalogue`).

OpenAI's CLIP weights as `transformers` publishes them on the Hub (`CLIPModel` folders: config, safetensors,
BPE tokenizer, `CLIPImageProcessor` at 224 px with OpenAI's mean/std). mixkit runs them with
`transformers.CLIPModel` itself (`mixkit.pipelines.clip`), so there is no converter and no LAVIS source.

open_clip (LAION-2B) and EVA-CLIP (EVA-02) weights are published as single files in their own layouts; their
entries say which file to download and the `mixkit convert open-clip|eva-clip` command that builds the folder
(`convert_command.py`). Files and preprocessing: open_clip 3.3.0 `pretrained.py` (ViT-B-32 `laion2b_s34b_b79k`
and ViT-L-14 `laion2b_s32b_b82k` on `laion/CLIP-ViT-*` Hub repos, the latter with `INCEPTION_MEAN/STD` = 0.5;
`open_clip_model.safetensors`, `constants.py` `HF_SAFE_WEIGHTS_NAME`) and its comments naming the EVA-CLIP
originals (`QuanSun/EVA-CLIP/EVA02_CLIP_B_psz16_s8B.pt`, `EVA02_CLIP_L_psz14_s4B.pt`, OpenAI mean/std).
Top-1 figures: docs/clip.md.
"""

from __future__ import annotations

from mixkit.models.entry import CheckpointEntry, ConvertRecipe, ReportedScore

_KINDS = ("vit-b-32", "vit-b-16", "vit-l-14", "eva02-b-16", "eva02-l-14")
# open_clip and EVA-CLIP tokenise with OpenAI's CLIP BPE; the converters take it from this download.
_TOKENIZER = ("hf download openai/clip-vit-base-patch32 vocab.json merges.txt tokenizer.json tokenizer_config.json "
              "special_tokens_map.json --local-dir clip-tokenizer")
_HUB = "https://huggingface.co/"
_INCEPTION = (0.5, 0.5, 0.5)  # open_clip constants.py INCEPTION_MEAN / INCEPTION_STD
_PADDLEMIX_EVA = "PaddleMIX paddlemix/examples/evaclip/README.md (commit 088dcd4)"


def _openai(kind: str, repo: str, description: str) -> CheckpointEntry:
    return CheckpointEntry(
        name=f"clip-{kind}",
        description=description,
        family="clip",
        kind=kind,
        tasks=("classify", "match"),
        hf_repo=repo,
        lavis_url=None,
        lavis_vit_url=None,
        lavis_config="",
        language_model=None,
        image_size=224,
        settings=None,
    )


def _converted(name: str, kind: str, source: str, description: str, top1: ReportedScore | None,
               normalisation: tuple[float, float, float] | None = None) -> CheckpointEntry:
    """An open_clip or EVA-CLIP file (`source`: Hub repo / file) built into a folder by `mixkit convert`."""
    family, command = ("eva_clip", "eva-clip") if kind.startswith("eva02") else ("clip", "open-clip")
    file_name = source.rsplit("/", 1)[1]
    normalise = "" if normalisation is None else " --mean {0} {1} {2} --std {0} {1} {2}".format(*normalisation)
    recipe = ConvertRecipe(
        origin="EVA-CLIP" if family == "eva_clip" else "open_clip", downloads=(f"{_HUB}{source}", _TOKENIZER),
        command=f"mixkit convert {command} --weights {file_name} --tokenizer clip-tokenizer{normalise} "
                "--output {output}")
    stats = {} if normalisation is None else {"mean": normalisation, "std": normalisation}
    return CheckpointEntry(name=name, description=description, family=family, kind=kind, tasks=("classify", "match"),
                           hf_repo=None, lavis_url=None, lavis_vit_url=None, lavis_config="", language_model=None,
                           image_size=224, settings=None, paper_scores=(top1,) if top1 else (), convert=recipe, **stats)


def _imagenet_top1(value: float, source: str) -> ReportedScore:
    return ReportedScore("ImageNet-1k zero-shot", "top1", value, source)


def _checked(entries: tuple[CheckpointEntry, ...]) -> tuple[CheckpointEntry, ...]:
    for entry in entries:
        if entry.kind not in _KINDS:
            raise ValueError(f"{entry.name}: unknown kind {entry.kind!r}")
        patch = int(entry.kind.rsplit("-", 1)[1])
        if entry.image_size % patch:
            raise ValueError(f"{entry.name}: image_size must be a multiple of the {patch} px patches")
    return entries


CLIP_CHECKPOINTS: tuple[CheckpointEntry, ...] = _checked((
    _openai("vit-b-32", "openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32, zero-shot classification"),
    _openai("vit-b-16", "openai/clip-vit-base-patch16", "OpenAI CLIP ViT-B/16, zero-shot classification"),
    _openai("vit-l-14", "openai/clip-vit-large-patch14", "OpenAI CLIP ViT-L/14, zero-shot classification"),
    _converted("open-clip-vit-b-32-laion2b", "vit-b-32",
               "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors",
               "open_clip ViT-B-32 trained on LAION-2B (laion2b_s34b_b79k), zero-shot classification",
               None),
    _converted("open-clip-vit-l-14-laion2b", "vit-l-14",
               "laion/CLIP-ViT-L-14-laion2B-s32B-b82K/resolve/main/open_clip_model.safetensors",
               "open_clip ViT-L-14 trained on LAION-2B (laion2b_s32b_b82k), zero-shot classification",
               _imagenet_top1(75.2, "PaddleMIX paddlemix/examples/clip README (see docs/clip.md)"), _INCEPTION),
    _converted("eva02-clip-b-16", "eva02-b-16", "QuanSun/EVA-CLIP/resolve/main/EVA02_CLIP_B_psz16_s8B.pt",
               "EVA02-CLIP-B-16 (EVA-02 vision tower), zero-shot classification",
               _imagenet_top1(74.6, _PADDLEMIX_EVA)),
    _converted("eva02-clip-l-14", "eva02-l-14", "QuanSun/EVA-CLIP/resolve/main/EVA02_CLIP_L_psz14_s4B.pt",
               "EVA02-CLIP-L-14 (EVA-02 vision tower), zero-shot classification",
               _imagenet_top1(79.6, _PADDLEMIX_EVA)),
))
