"""The named checkpoint catalogue: lookup, did-you-mean, and the shape of every entry."""

from __future__ import annotations

import dataclasses

import pytest

from mixkit.data.image_stats import CLIP_MEAN, CLIP_STD
from mixkit.models.catalogue import UnknownCheckpointError, format_catalogue_table, get_checkpoint, list_checkpoints
from mixkit.models.entry import CheckpointEntry

EXPECTED_NAMES = [
    "blip2-stage1",
    "blip2-stage2",
    "blip2-pretrained-opt2.7b",
    "blip2-pretrained-opt6.7b",
    "blip2-pretrained-flant5xl",
    "blip2-pretrained-flant5xxl",
    "blip2-caption-opt2.7b",
    "blip2-caption-opt6.7b",
    "blip2-caption-flant5xl",
    "blip-caption-base",
    "blip-vqa-base",
    "blip-itm-base-coco",
    "clip-vit-b-32",
    "clip-vit-b-16",
    "clip-vit-l-14",
    "open-clip-vit-b-32-laion2b",
    "open-clip-vit-l-14-laion2b",
    "eva02-clip-b-16",
    "eva02-clip-l-14",
    "minigpt4-vicuna7b",
    "minigpt4-vicuna13b",
    "minigpt4-llama2-7b",
    "minigptv2-llama2-7b",
    "instructblip-flan-t5-xl",
    "instructblip-flan-t5-xxl",
    "instructblip-vicuna-7b",
    "instructblip-vicuna-13b",
    "albef-pretrain-base",
    "albef-retrieval-coco",
    "albef-retrieval-flickr",
    "albef-vqav2",
]
LAVIS_PREFIX = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
ENTRIES = list_checkpoints()
BLIP2_ENTRIES = list_checkpoints("blip2")
CLIP_ENTRIES = list_checkpoints("clip")


def test_names_are_exactly_the_articles() -> None:
    assert [e.name for e in ENTRIES] == EXPECTED_NAMES


def test_get_checkpoint_returns_the_entry() -> None:
    entry = get_checkpoint("blip2-caption-opt2.7b")
    assert entry.hf_repo == "Salesforce/blip2-opt-2.7b-coco"
    assert entry.lavis_url == LAVIS_PREFIX + "blip2_caption_opt2.7b.pth"


def test_unknown_name_suggests_the_close_one() -> None:
    with pytest.raises(UnknownCheckpointError) as info:
        get_checkpoint("blip2-pretrained-opt2_7b")
    message = str(info.value)
    assert "did you mean 'blip2-pretrained-opt2.7b'" in message
    assert "mixkit models" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_unrelated_name_gets_only_the_list_hint() -> None:
    with pytest.raises(UnknownCheckpointError, match="mixkit models") as info:
        get_checkpoint("resnet50")
    assert "did you mean" not in str(info.value)


def test_entries_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ENTRIES[0].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("entry", BLIP2_ENTRIES, ids=lambda e: e.name)
def test_entry_shape_is_consistent(entry: CheckpointEntry) -> None:
    assert entry.family == "blip2"
    assert (entry.mean, entry.std) == (CLIP_MEAN, CLIP_STD)
    assert entry.lavis_url is not None and entry.lavis_url.startswith(LAVIS_PREFIX)
    assert entry.hf_repo is not None and entry.hf_repo.startswith("Salesforce/blip2-")
    lm_prefix = {"stage1": None, "opt": "facebook/opt-", "t5": "google/flan-t5-"}[entry.kind]
    if lm_prefix is None:
        assert entry.language_model is None and entry.settings is None
        assert entry.tasks == ("retrieval", "itm", "itc", "classify", "match")
    else:
        settings = entry.settings
        assert entry.language_model is not None and entry.language_model.startswith(lm_prefix)
        assert entry.tasks == ("caption", "vqa") and settings is not None
        assert settings.vqa_prompt == "Question: {} Short answer:"
        assert settings.caption.num_beams == 5 and settings.vqa.num_beams == 5
        assert settings.vqa.max_new_tokens == 10
        assert settings.vqa.length_penalty == (-1.0 if entry.kind == "t5" else 0.0)
    assert all(score.source for score in entry.paper_scores)


@pytest.mark.parametrize("entry", [e for e in CLIP_ENTRIES if e.convert is None], ids=lambda e: e.name)
def test_clip_entries_are_hub_only_classifiers(entry: CheckpointEntry) -> None:
    assert (entry.family, entry.tasks, entry.settings, entry.image_size) == ("clip", ("classify", "match"), None, 224)
    assert entry.hf_repo is not None and entry.hf_repo.startswith("openai/clip-vit-")
    assert (entry.lavis_url, entry.lavis_vit_url, entry.lavis_config, entry.language_model) == (None, None, "", None)
    assert (entry.mean, entry.std) == (CLIP_MEAN, CLIP_STD)


@pytest.mark.parametrize("entry", BLIP2_ENTRIES, ids=lambda e: e.name)
def test_caption_and_pretrained_preprocessing(entry: CheckpointEntry) -> None:
    if entry.name.startswith("blip2-caption-"):
        assert (entry.prompt, entry.image_size) == ("a photo of", 364)
        assert entry.lavis_vit_url is None  # the ViT was fine-tuned: its weights are inside
    else:
        assert (entry.prompt, entry.image_size) == ("", 224)
        assert entry.lavis_vit_url == LAVIS_PREFIX + "eva_vit_g.pth"


def test_stage2_is_documented_as_the_stage1_weights() -> None:
    stage1, stage2 = get_checkpoint("blip2-stage1"), get_checkpoint("blip2-stage2")
    assert stage2.lavis_url == stage1.lavis_url == LAVIS_PREFIX + "blip2_pretrained.pth"
    assert stage2.hf_repo == stage1.hf_repo == "Salesforce/blip2-itm-vit-g"
    assert "blip2-stage1" in stage2.description


def test_table_lists_every_entry_aligned() -> None:
    lines = format_catalogue_table().splitlines()
    assert lines[0].split()[:6] == ["NAME", "FAMILY", "KIND", "TASKS", "IMAGE", "SOURCE"]
    assert len(lines) == len(ENTRIES) + 1
    kind_column = lines[0].index("KIND")
    for line, entry in zip(lines[1:], ENTRIES):
        assert line.startswith(entry.name)
        assert line[kind_column:].startswith(entry.kind)
        assert entry.source in line


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.convert is not None], ids=lambda e: e.name)
def test_open_clip_and_eva_clip_entries_are_built_by_mixkit_convert(entry: CheckpointEntry) -> None:
    assert entry.family in ("clip", "eva_clip") and entry.tasks == ("classify", "match") and entry.settings is None
    assert entry.hf_repo is None and entry.lavis_url is None and entry.image_size == 224
    command = "eva-clip" if entry.family == "eva_clip" else "open-clip"
    assert entry.convert.command.startswith(f"mixkit convert {command} --weights ")
    assert entry.source == f"{entry.convert.origin} file (mixkit convert)"
    assert all(score.source for score in entry.paper_scores)


def test_entries_reject_inconsistent_tasks_and_settings() -> None:
    stage1, caption = get_checkpoint("blip2-stage1"), get_checkpoint("blip2-caption-opt2.7b")
    with pytest.raises(ValueError, match="need settings"):
        dataclasses.replace(caption, settings=None)
    with pytest.raises(ValueError, match="need settings"):
        dataclasses.replace(stage1, settings=caption.settings)
    with pytest.raises(ValueError, match="subset"):
        dataclasses.replace(stage1, tasks=("segment",))


def test_family_filter() -> None:
    families = ("blip2", "blip", "clip", "eva_clip", "minigpt4", "instructblip", "albef")
    assert {entry.family for entry in ENTRIES} == set(families)
    for family in families:  # each family's entries, in catalogue order
        assert list_checkpoints(family) == [entry for entry in ENTRIES if entry.family == family], family
    assert sum(len(list_checkpoints(family)) for family in families) == len(ENTRIES)
    assert len(CLIP_ENTRIES) == 5
    assert list_checkpoints("no-such-family") == []
