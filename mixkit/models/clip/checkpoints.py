"""The named CLIP checkpoints, as plain data (read by `mixkit.models.catalogue`).

OpenAI's CLIP weights as `transformers` publishes them on the Hub (`CLIPModel` folders: config, safetensors,
BPE tokenizer, `CLIPImageProcessor` at 224 px with OpenAI's mean/std). mixkit runs them with
`transformers.CLIPModel` itself (`mixkit.pipelines.clip`), so there is no converter and no LAVIS source.
"""

from __future__ import annotations

from mixkit.models.entry import CheckpointEntry

_KINDS = ("vit-b-32", "vit-b-16", "vit-l-14")


def _openai(kind: str, repo: str, description: str) -> CheckpointEntry:
    return CheckpointEntry(
        name=f"clip-{kind}",
        description=description,
        family="clip",
        kind=kind,
        tasks=("classify",),
        hf_repo=repo,
        lavis_url=None,
        lavis_vit_url=None,
        lavis_config="",
        language_model=None,
        image_size=224,
        settings=None,
    )


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
))
