"""The named MiniGPT-4 / MiniGPT-v2 checkpoints, as plain data (read by `mixkit.models.catalogue`).

The official weights are `.pth` files on Google Drive (links in Vision-CAIR/MiniGPT-4 d94738a README.md,
"Prepare the pretrained model checkpoints") holding only `llama_proj` (and MiniGPT-v2's LoRA weights); the
language models are Hub repositories (`Vision-CAIR/vicuna-7b`, `Vision-CAIR/vicuna` (13B),
`meta-llama/Llama-2-7b-chat-hf`). `mixkit convert minigpt4` builds the folder a name resolves to,
`$MIXKIT_HOME/checkpoints/<name>` (docs/minigpt4.md). Image sizes: `minigpt4/configs/models/*.yaml`.
"""

from __future__ import annotations

from mixkit.models.entry import CheckpointEntry
from mixkit.models.minigpt4.templates import reference_settings

_HOW = "`mixkit convert minigpt4 --variant {variant}`: {file} + {llm}"


def _entry(name: str, variant: str, file: str, llm: str, description: str, image_size: int = 224,
           tasks: tuple[str, ...] = ("chat", "caption", "vqa")) -> CheckpointEntry:
    return CheckpointEntry(
        name=name,
        description=f"{description}; {_HOW.format(variant=variant, file=file, llm=llm)}",
        family="minigpt4",
        kind=variant,
        tasks=tasks,
        hf_repo=None,
        lavis_url=None,
        lavis_vit_url=None,
        lavis_config=f"Vision-CAIR/MiniGPT-4 eval_configs ({variant})",
        language_model=llm,
        image_size=image_size,
        settings=reference_settings(variant),
    )


MINIGPT4_CHECKPOINTS: tuple[CheckpointEntry, ...] = (
    _entry("minigpt4-vicuna7b", "vicuna0", "the README's 'MiniGPT-4 (Vicuna 7B)' .pth", "Vision-CAIR/vicuna-7b",
           "MiniGPT-4: BLIP-2 Q-Former -> llama_proj -> Vicuna v0 7B"),
    _entry("minigpt4-vicuna13b", "vicuna0", "the README's 'MiniGPT-4 (Vicuna 13B)' .pth", "Vision-CAIR/vicuna",
           "MiniGPT-4: BLIP-2 Q-Former -> llama_proj -> Vicuna v0 13B"),
    _entry("minigpt4-llama2-7b", "llama2", "the README's 'MiniGPT-4 (LLaMA-2 Chat 7B)' .pth",
           "meta-llama/Llama-2-7b-chat-hf",
           "MiniGPT-4: 4 ViT patches per token -> llama_proj -> Llama-2-chat 7B"),
    _entry("minigptv2-llama2-7b", "minigptv2", "the README's 'MiniGPT-v2 (after stage-3)' .pth",
           "meta-llama/Llama-2-7b-chat-hf",
           "MiniGPT-v2 (stage 3): 448 px, 4 patches per token, LoRA Llama-2-chat 7B, task identifiers",
           image_size=448, tasks=("chat", "caption", "vqa", "grounding")),
)
