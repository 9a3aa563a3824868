"""The vision apps: image captioning (BLIP-2 + noun tags, MiniGPT-4, Qwen2-VL), open-set detection + segmentation
(Grounding DINO + SAM) and automatic labelling (BLIP-2 tags -> Grounding DINO -> SAM, a COCO file per folder).

App names, key names, model roles and thresholds follow PaddleMIX `paddlemix/appflow/configuration.py` and its
task modules (snapshot 6afaf05); the checkpoints are the `transformers` ports of the same models:
GroundingDino/groundingdino-swint-ogc -> IDEA-Research/grounding-dino-tiny (Swin-T, trained on O365+GoldG+Cap4M),
Sam/SamVitH-1024 -> facebook/sam-vit-huge, paddlemix/blip2-caption-opt2.7b -> mixkit's `blip2-caption-opt2.7b`,
qwen-vl/qwen-vl-chat-7b -> Qwen2-VL (the Qwen-VL successor that `transformers` runs natively).
"""

from __future__ import annotations

from mixkit.apps.appflow.spec import AppModel, AppSpec, Stage

_STEPS = "mixkit.apps.appflow.steps."
DETECTION_STEP = _STEPS + "detection:GroundingDinoStep"
SEGMENTATION_STEP = _STEPS + "segmentation:SamStep"


def _hub(repo: str, step: str, kinds: tuple[str, ...], description: str) -> AppModel:
    return AppModel(name=repo, step=step, hf_repo=repo, kinds=kinds, description=description)


GROUNDING_DINO_MODELS: tuple[AppModel, ...] = (
    _hub("IDEA-Research/grounding-dino-tiny", DETECTION_STEP, ("grounding-dino",),
         "Grounding DINO Swin-T (PaddleMIX's GroundingDino/groundingdino-swint-ogc)"),
    _hub("IDEA-Research/grounding-dino-base", DETECTION_STEP, ("grounding-dino",), "Grounding DINO Swin-B"),
)
SAM_MODELS: tuple[AppModel, ...] = (
    _hub("facebook/sam-vit-huge", SEGMENTATION_STEP, ("sam",), "SAM ViT-H (PaddleMIX's Sam/SamVitH-1024)"),
    _hub("facebook/sam-vit-large", SEGMENTATION_STEP, ("sam",), "SAM ViT-L"),
    _hub("facebook/sam-vit-base", SEGMENTATION_STEP, ("sam",), "SAM ViT-B"),
)
BLIP2_CAPTION = AppModel(name="blip2-caption-opt2.7b", step=_STEPS + "captioning:Blip2CaptionStep",
                         kinds=("blip-2",), description="BLIP-2 OPT-2.7b COCO caption (mixkit catalogue): caption "
                                                        "in `result`, its noun tags in `prompt`")
QWEN2_VL_MODELS: tuple[AppModel, ...] = (
    _hub("Qwen/Qwen2-VL-2B-Instruct", _STEPS + "vlm:Qwen2VLStep", ("qwen2_vl", "qwen2_5_vl"),
         "Qwen2-VL 2B chat through transformers (PaddleMIX lists qwen-vl-chat-7b)"),
    _hub("Qwen/Qwen2-VL-7B-Instruct", _STEPS + "vlm:Qwen2VLStep", ("qwen2_vl", "qwen2_5_vl"), "Qwen2-VL 7B chat"),
)
MINIGPT4 = AppModel(name="minigpt4-vicuna7b", step=_STEPS + "vlm:MiniGPT4Step", kinds=("minigpt4",),
                    description="MiniGPT-4 (Vicuna 7B) through mixkit's chat pipeline: `minigpt4_text` -> `result`")

DETECTOR = Stage("detector", GROUNDING_DINO_MODELS, default=GROUNDING_DINO_MODELS[0].name)
SEGMENTER = Stage("segmenter", SAM_MODELS, default=SAM_MODELS[0].name)
# PaddleMIX's thresholds (appflow GroundingDinoTask: box_threshold 0.3, text_threshold 0.25).
DETECTION_PARAMS = {"box_threshold": 0.3, "text_threshold": 0.25}

APPS: tuple[AppSpec, ...] = (
    AppSpec(
        name="image2text_generation",
        description="describe an image: BLIP-2 caption + noun tags (default), MiniGPT-4 or Qwen2-VL chat",
        stages=(Stage("captioner", (BLIP2_CAPTION, MINIGPT4, *QWEN2_VL_MODELS), default=BLIP2_CAPTION.name),),
        inputs=("image", "blip2_prompt", "minigpt4_text", "prompt"),
        outputs=("result", "prompt"),
        params={"max_new_tokens": 128},  # the chat models' answer length; BLIP-2 keeps its reference settings
        example="mixkit app run image2text_generation --image cat.jpg --output out --json",
    ),
    AppSpec(
        name="openset_det_sam",
        description="open-set detection of the prompt's phrases (Grounding DINO), then a SAM mask per box",
        stages=(DETECTOR, SEGMENTER),
        inputs=("image", "prompt"),
        outputs=("boxes", "labels", "scores", "seg_masks"),
        params=dict(DETECTION_PARAMS),
        example="mixkit app run openset_det_sam --image dog.jpg --prompt dog --output out --json",
    ),
    AppSpec(
        name="auto_label",
        description="label images: BLIP-2 caption tags -> Grounding DINO boxes -> SAM masks; over a folder, "
                    "a COCO instances file (resumable, sharded under torchrun)",
        stages=(Stage("captioner", (BLIP2_CAPTION,), default=BLIP2_CAPTION.name), DETECTOR, SEGMENTER),
        inputs=("image", "blip2_prompt"),
        outputs=("result", "prompt", "boxes", "labels", "scores", "seg_masks"),
        params=dict(DETECTION_PARAMS),
        example="mixkit app run auto_label --image photos/ --output labels --json",
    ),
)
