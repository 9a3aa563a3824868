"""Typed settings of the end-to-end evaluations: one dataclass per command, its fields the command's options.

`mixkit eval vqa|caption|retrieval` and `python -m mixkit.eval.<task>_eval` (what torchrun launches) build
these from the command line (`mixkit.utils.typed_args`); library callers such as the demo build them
directly and call `evaluate_vqa(config)`, `evaluate_caption(config)` or `evaluate_retrieval(config)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mixkit.pipelines.options import GenerationOptions, ModelOptions

COCO_IMAGE_PATTERN = "val2014/COCO_val2014_{image_id:012d}.jpg"
DEFAULT_K_TEST = 128  # LAVIS blip2 ret_coco_eval.yaml and ret_flickr_eval.yaml


def _positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")


@dataclass(kw_only=True)
class GenerativeEvalConfig(GenerationOptions, ModelOptions):
    """What VQA and caption evaluation share: the model, generation overrides, output, resume."""

    output_dir: Path = field(metadata={"help": "where result, metrics and partial files go"})
    save_every: int = field(default=10, metadata={"help": "batches between partial-result saves (default 10)"})
    resume: bool = field(default=False, metadata={"help": "reuse the partial results in --output-dir"})

    def check(self) -> None:
        super().check()
        _positive(self, "save_every")


@dataclass(kw_only=True)
class VqaEvalConfig(GenerativeEvalConfig):
    questions: Path = field(metadata={"help": "official VQAv2 questions JSON"})
    annotations: Path | None = field(default=None, metadata={
        "help": "official VQAv2 annotations JSON, for scoring (none for test-dev)"})
    image_root: Path = field(metadata={"help": "folder the --image-pattern is relative to"})
    image_pattern: str = field(default=COCO_IMAGE_PATTERN, metadata={
        "help": f"image file of an image_id, a str.format pattern (default {COCO_IMAGE_PATTERN!r})"})
    split: str = field(default="val", metadata={"help": "names the result file {split}_vqa_result.json (default val)"})


@dataclass(kw_only=True)
class CaptionEvalConfig(GenerativeEvalConfig):
    records: Path = field(metadata={
        "help": "COCO-Karpathy test records JSON: [{'image', 'caption': [refs], 'image_id'?}]"})
    image_root: Path = field(metadata={"help": "folder the records' image paths are under"})
    gt: Path | None = field(default=None, metadata={"help": "COCO-captions ground-truth JSON, for scoring"})
    spice: bool = field(default=False, metadata={"help": "also compute SPICE (needs its CoreNLP jars)"})
    split: str = field(default="test", metadata={
        "help": "names the result file {split}_caption_result.json (default test)"})


@dataclass(kw_only=True)
class RetrievalEvalConfig:
    model: str = field(metadata={
        "help": "stage-1 checkpoint: catalogue name or folder (config, weights, Q-Former tokenizer, preprocessor "
                "config)"})
    records: Path = field(metadata={
        "help": "Karpathy eval records JSON: [{'image', 'caption': [texts], 'image_id'?}]"})
    image_root: Path = field(metadata={"help": "folder the records' image paths are under"})
    output_dir: Path = field(metadata={"help": "where the result and metrics files go"})
    k_test: int = field(default=DEFAULT_K_TEST, metadata={
        "help": f"ITC candidates re-ranked by ITM per query (default {DEFAULT_K_TEST}, LAVIS's BLIP-2 COCO and "
                "Flickr30k setting)"})
    split: str = field(default="test", metadata={
        "help": "names the result file {split}_retrieval_result.json (default test)"})
    batch_size: int = field(default=32, metadata={"help": "images or texts per encoder pass (default 32)"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)"})

    def check(self) -> None:
        _positive(self, "k_test", "batch_size")


@dataclass(kw_only=True)
class ZeroShotEvalConfig:
    model: str = field(metadata={"help": "CLIP or EVA-CLIP checkpoint: catalogue name or folder"})
    images: Path = field(metadata={
        "help": "JSON list of {'image': path, 'label': class index or name}; paths relative to --image-root"})
    classes: str = field(metadata={
        "help": "JSON list of class names (index order), or 'imagenet': OpenAI's 1000 ImageNet names (shipped)"})
    templates: str | None = field(default=None, metadata={
        "help": "JSON list of prompt templates with one '{}', or 'openai-imagenet': OpenAI's 80 (shipped); "
                "default: the single 'a photo of a {}.'"})
    image_root: Path | None = field(default=None, metadata={"help": "folder of the image paths (default: the "
                                                                    "folder of --images)"})
    output_dir: Path = field(metadata={"help": "where the result, metrics and partial files go"})
    split: str = field(default="val", metadata={"help": "names the result file {split}_zeroshot_result.json "
                                                        "(default val)"})
    batch_size: int = field(default=32, metadata={"help": "images per encoder pass (default 32)"})
    save_every: int = field(default=10, metadata={"help": "batches between partial-result saves (default 10)"})
    resume: bool = field(default=False, metadata={"help": "reuse the partial results in --output-dir"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)"})

    def check(self) -> None:
        _positive(self, "batch_size", "save_every")


@dataclass(kw_only=True)
class GroundingEvalConfig(GenerativeEvalConfig):
    """`mixkit eval grounding`: MiniGPT-v2 referring-expression grounding (RefCOCO / RefCOCO+ / RefCOCOg)."""

    annotations: Path = field(metadata={
        "help": "RefCOCO-format records JSON as MiniGPT-v2's eval_ref.py reads it: [{'img_id', 'sents', 'bbox': "
                "[x, y, w, h], 'height', 'width'}]"})
    image_root: Path = field(metadata={
        "help": "folder of the images: img_id without its last '_' field + '.jpg' (COCO: img_id[:27] + '.jpg')"})
    split: str = field(default="val", metadata={
        "help": "names the result file {split}_grounding_result.json (default val)"})
    iou_threshold: float = field(default=0.5, metadata={
        "help": "a prediction is correct when its IoU with the box is at least this (default 0.5, RefCOCO's rule)"})
