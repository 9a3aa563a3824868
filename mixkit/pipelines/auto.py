"""`load_pipeline`: one call for any checkpoint, the family picked as `transformers`' Auto classes do.

The pipeline class comes from, in order: the catalogue entry (a catalogue name, or a folder recognised by its
location), the folder's `config.json` `architectures`, then its `model_type`. The tables below are the whole
mapping; a new family adds its rows here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from mixkit.models.catalogue import UnknownCheckpointError, get_checkpoint
from mixkit.models.hub import identify_checkpoint, resolve_checkpoint
from mixkit.models.layout import CONFIG_NAME

# (family, task) -> "module:Class".
PIPELINES_BY_TASK: dict[tuple[str, str], str] = {
    ("blip2", "caption"): "mixkit.pipelines.blip2:Blip2Pipeline",
    ("blip2", "vqa"): "mixkit.pipelines.blip2:Blip2Pipeline",
    ("blip2", "retrieval"): "mixkit.pipelines.blip2_retrieval:Blip2RetrievalPipeline",
    ("blip2", "itm"): "mixkit.pipelines.blip2_retrieval:Blip2RetrievalPipeline",
    ("blip2", "itc"): "mixkit.pipelines.blip2_retrieval:Blip2RetrievalPipeline",
    ("blip2", "classify"): "mixkit.pipelines.blip2_retrieval:Blip2RetrievalPipeline",
    ("clip", "classify"): "mixkit.pipelines.clip:ClipPipeline",
    ("blip2", "match"): "mixkit.pipelines.blip2_retrieval:Blip2RetrievalPipeline",
    ("clip", "match"): "mixkit.pipelines.clip:ClipPipeline",
    # CLIP and EVA-CLIP (one pipeline class; the folder's model_type picks the model): ITC retrieval only.
    **{(family, task): "mixkit.pipelines.clip:ClipPipeline"
       for family in ("clip", "eva_clip") for task in ("classify", "match", "retrieval", "itc")},
    **{("blip", task): "mixkit.pipelines.blip:BlipPipeline"
       for task in ("caption", "vqa", "retrieval", "itm", "itc", "classify", "match")},
    **{("albef", task): "mixkit.pipelines.albef:AlbefPipeline"
       for task in ("vqa", "retrieval", "itm", "itc", "classify", "match")},
    **{("minigpt4", task): "mixkit.pipelines.minigpt4:MiniGPT4Pipeline"
       for task in ("chat", "caption", "vqa", "grounding")},
    **{("instructblip", task): "mixkit.pipelines.instructblip:InstructBlipPipeline"
       for task in ("chat", "caption", "vqa")},
}
# `config.json` "architectures" -> (family, its first task).
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "Blip2ForConditionalGeneration": ("blip2", "caption"),
    "MiniGPT4Model": ("minigpt4", "chat"),
    "Blip2ForImageTextRetrieval": ("blip2", "retrieval"),
    "CLIPModel": ("clip", "classify"),
    "InstructBlipForConditionalGeneration": ("instructblip", "chat"),
    "EvaClipModel": ("eva_clip", "classify"),  # mixkit.models.clip.eva_clip
    "BlipForConditionalGeneration": ("blip", "caption"),
    "BlipForQuestionAnswering": ("blip", "vqa"),
    "BlipForImageTextRetrieval": ("blip", "retrieval"),
    "BlipForPreTraining": ("blip", "caption"),  # mixkit's layout with every BLIP head (mixkit.models.blip)
    "AlbefForRetrieval": ("albef", "retrieval"),  # mixkit.models.albef
    "AlbefForPreTraining": ("albef", "retrieval"),
    "AlbefForQuestionAnswering": ("albef", "vqa"),
}
MODEL_TYPES: dict[str, str] = {"blip-2": "blip2", "clip": "clip", "eva_clip": "eva_clip", "blip": "blip",
                               "instructblip": "instructblip",
                               "albef": "albef"}


def _import(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _config_family_task(directory: Path) -> tuple[str, str]:
    """(family, task) read from a folder's `config.json`."""
    config = json.loads((directory / CONFIG_NAME).read_text())
    for architecture in config.get("architectures") or []:
        if architecture in ARCHITECTURES:
            return ARCHITECTURES[architecture]
    family = MODEL_TYPES.get(config.get("model_type", ""))
    if family == "clip":
        return family, "classify"
    if family is None:
        known = ", ".join(sorted(MODEL_TYPES))
        raise ValueError(f"{directory / CONFIG_NAME}: model_type {config.get('model_type')!r} is not one mixkit "
                         f"serves (known: {known})")
    # A BLIP-2 config without architectures: the Q-Former's text blocks mark a stage-1 (retrieval) model.
    text_input = (config.get("qformer_config") or {}).get("use_qformer_text_input", False)
    return family, "retrieval" if text_input else "caption"


def family_and_task(name_or_folder: str, task: str | None = None) -> tuple[str, str]:
    """Which family a checkpoint belongs to and which task its pipeline should serve; a catalogue name is
    answered from the catalogue alone (nothing is resolved or read yet)."""
    folder = Path(name_or_folder).expanduser()
    if folder.is_dir():
        entry = identify_checkpoint(folder)
    else:
        try:
            entry = get_checkpoint(name_or_folder)
        except UnknownCheckpointError:
            resolve_checkpoint(name_or_folder)  # the better message: a missing folder, or "did you mean"
            raise
    if entry is not None:
        if task is not None and task not in entry.tasks:
            raise ValueError(f"{entry.name} does not do {task!r}; it does {', '.join(entry.tasks)}")
        return entry.family, task or entry.tasks[0]
    family, default_task = _config_family_task(resolve_checkpoint(name_or_folder))
    return family, task or default_task


def load_pipeline(name_or_folder: str, task: str | None = None, **options: Any) -> Any:
    """The pipeline for a catalogue name or checkpoint folder; `options` go to its `from_pretrained`
    (`device`, and `fp32` for generative pipelines). `task` picks among a family's pipelines."""
    family, chosen = family_and_task(name_or_folder, task)
    target = PIPELINES_BY_TASK.get((family, chosen))
    if target is None:
        raise ValueError(f"no pipeline for task {chosen!r} of the {family} family")
    return _import(target).from_pretrained(name_or_folder, **options)
