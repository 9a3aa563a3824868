"""The generation apps: text-to-image, image-to-image, x4 upscaling, dual text+image guidance, text-to-video and
Grounded-SAM inpainting, on `diffusers` (steps in `steps/diffusion.py`). Light: data only.

Apps, default models and parameters follow PaddleMIX's AppFlow (PaddlePaddle/PaddleMIX paddlemix/appflow/
`configuration.py` at 3bebc03, `text2text_generation.py` at 240e218 and the task files named in
`steps/diffusion.py`); the models are the Hub's `diffusers` folders of the same checkpoints, and a
local folder is recognised by its `model_index.json` "_class_name". A parameter left at None is not passed to the
pipeline, so the pipeline's default applies (height/width: the model's native size, 768 px for SD 2 as PaddleMIX
sets it). Where PaddleMIX fixes a value the library leaves open it is kept: guidance_scale 7.5, strength 0.75 for
img2img, text_to_image_strength 0.75, 25 steps with DPM-Solver++ for text-to-video. No negative prompt by default
(PaddleMIX's img2img demands one; here it is optional).
"""

from __future__ import annotations

from mixkit.apps.appflow.apps_vision import DETECTION_PARAMS, DETECTOR, SEGMENTER
from mixkit.apps.appflow.spec import AppModel, AppSpec, Stage

_STEPS = "mixkit.apps.appflow.steps"
_SD_TEXT_KINDS = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")

# PaddleMIX's default inpainting LLM is THUDM/chatglm-6b, whose Hub folder runs only as remote code; GLM-4 chat is
# its successor with a native `transformers` class (model_type "glm"). Any causal LM folder fills the stage.
LLM_KINDS = ("glm", "glm4", "chatglm", "qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "phi3", "opt", "gpt2")


def _generator(name: str, step: str, kinds: tuple[str, ...], description: str, **options: object) -> AppModel:
    return AppModel(name=name, step=f"{_STEPS}.diffusion:{step}", hf_repo=name, description=description,
                    options=dict(options), kinds=kinds)


def _llm(name: str, step: str, description: str) -> AppModel:
    return AppModel(name=name, step=f"{_STEPS}.llm:{step}", hf_repo=name, description=description, kinds=LLM_KINDS)


def llm_models(step: str) -> tuple[AppModel, ...]:
    """The language models an LLM stage can run (the default first), each through `steps/llm.py:<step>`."""
    return (_llm("THUDM/glm-4-9b-chat-hf", step, "GLM-4 9B chat (ChatGLM-6B's successor, native in transformers)"),
            _llm("Qwen/Qwen2.5-1.5B-Instruct", step, "Qwen2.5 1.5B instruct"))


SEED = {"seed": None}  # an int seeds a CPU torch.Generator for the initial noise
IMAGE_PARAMS = {"negative_prompt": None, "guidance_scale": 7.5, "num_inference_steps": 50}

TEXT2IMAGE = AppSpec(
    name="text2image_generation",
    description="Stable Diffusion 1.x / 2.x / XL: an image for a text prompt",
    stages=(Stage("generator", (
        _generator("stabilityai/stable-diffusion-2", "TextToImageStep", _SD_TEXT_KINDS, "SD 2 (768 px, v-prediction)"),
        _generator("stable-diffusion-v1-5/stable-diffusion-v1-5", "TextToImageStep", _SD_TEXT_KINDS,
                   "SD 1.5 (512 px; PaddleMIX's stable-diffusion-v1-5)"),
        _generator("stabilityai/stable-diffusion-xl-base-1.0", "TextToImageStep", _SD_TEXT_KINDS, "SD-XL (1024 px)"),
    ), default="stabilityai/stable-diffusion-2"),),
    inputs=("prompt",), outputs=("result",),
    params={**IMAGE_PARAMS, "height": None, "width": None, **SEED},
    example='mixkit app run text2image_generation --prompt "a photo of an astronaut riding a horse on mars" '
            "--seed 0 --output out/",
)

IMAGE2IMAGE = AppSpec(
    name="image2image_text_guided_generation",
    description="Stable Diffusion img2img (or the SD-XL refiner): the image redrawn as the prompt says",
    stages=(Stage("generator", (
        _generator("Linaqruf/anything-v3.0", "ImageToImageStep", _SD_TEXT_KINDS + ("StableDiffusionImg2ImgPipeline",),
                   "Anything v3 (SD 1.x anime)"),
        _generator("admruul/anything-v3.0", "ImageToImageStep", _SD_TEXT_KINDS, "a copy of Anything v3"),
        _generator("stabilityai/stable-diffusion-xl-refiner-1.0", "ImageToImageStep",
                   ("StableDiffusionXLImg2ImgPipeline",), "SD-XL refiner"),
    ), default="Linaqruf/anything-v3.0"),),
    inputs=("image", "prompt"), outputs=("result",),
    params={**IMAGE_PARAMS, "strength": 0.75, **SEED},
    example='mixkit app run image2image_text_guided_generation --image sketch.png --prompt "a fantasy landscape" '
            '--negative_prompt "lowres, bad anatomy" --seed 0 --output out/',
)

UPSCALING = AppSpec(
    name="image2image_text_guided_upscaling",
    description="The Stable Diffusion x4 upscaler: the image four times larger, guided by the prompt",
    stages=(Stage("upscaler", (
        _generator("stabilityai/stable-diffusion-x4-upscaler", "UpscaleStep", ("StableDiffusionUpscalePipeline",),
                   "x4 latent upscaler"),
    ), default="stabilityai/stable-diffusion-x4-upscaler"),),
    inputs=("image", "prompt"), outputs=("result",),
    # The upscaler's own defaults (diffusers StableDiffusionUpscalePipeline.__call__); PaddleMIX passes none.
    params={"negative_prompt": None, "guidance_scale": 9.0, "num_inference_steps": 75, "noise_level": 20, **SEED},
    example='mixkit app run image2image_text_guided_upscaling --image low_res_cat.png --prompt "a white cat" '
            "--output out/",
)

DUAL_GUIDED = AppSpec(
    name="dual_text_and_image_guided_generation",
    description="Versatile Diffusion: an image guided by a text prompt and an image together",
    stages=(Stage("generator", (
        _generator("shi-labs/versatile-diffusion", "DualGuidedStep",
                   ("VersatileDiffusionPipeline", "VersatileDiffusionDualGuidedPipeline"),
                   "Versatile Diffusion (diffusers' VersatileDiffusionDualGuidedPipeline)"),
    ), default="shi-labs/versatile-diffusion"),),
    inputs=("image", "prompt"), outputs=("result",),
    params={"text_to_image_strength": 0.75, "guidance_scale": 7.5, "num_inference_steps": 50, "height": None,
            "width": None, **SEED},
    example='mixkit app run dual_text_and_image_guided_generation --image benz.jpg --prompt "red car in the sky" '
            "--seed 0 --output out/",
)

TEXT2VIDEO = AppSpec(
    name="text_to_video_generation",
    description="ModelScope text-to-video: frames for a prompt, written as a GIF",
    stages=(Stage("generator", (
        _generator("damo-vilab/text-to-video-ms-1.7b", "TextToVideoStep", ("TextToVideoSDPipeline",),
                   "ModelScope T2V 1.7B", scheduler="DPMSolverMultistepScheduler"),
    ), default="damo-vilab/text-to-video-ms-1.7b"),),
    inputs=("prompt",), outputs=("result",),
    # guidance_scale 9.0 and 16 frames: TextToVideoSDPipeline's defaults (PaddleMIX passes only the steps).
    params={"negative_prompt": None, "guidance_scale": 9.0, "num_inference_steps": 25, "num_frames": 16,
            "height": None, "width": None, "fps": 8, **SEED},
    example='mixkit app run text_to_video_generation --prompt "an astronaut riding a horse" --seed 0 --output out/',
)

INPAINTING = AppSpec(
    name="inpainting",
    description="Grounded-SAM inpainting: Grounding DINO finds `prompt`, SAM masks it, Stable Diffusion repaints "
                "the mask with `inpaint_prompt`; an optional LLM first splits a free-form request into the two",
    stages=(
        Stage("splitter", llm_models("InpaintRequestStep"), default=None),
        DETECTOR,
        SEGMENTER,
        Stage("inpainter", (
            _generator("stabilityai/stable-diffusion-2-inpainting", "InpaintStep",
                       ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline"), "SD 2 inpainting"),
        ), default="stabilityai/stable-diffusion-2-inpainting"),
    ),
    inputs=("image", "prompt", "inpaint_prompt"), outputs=("boxes", "labels", "scores", "seg_masks", "result"),
    # height/width None: the inpainting model's native size (512 for SD 2 inpainting, PaddleMIX's resize).
    params={**DETECTION_PARAMS, **IMAGE_PARAMS, "strength": 1.0, "height": None,
            "width": None, "max_new_tokens": 64, **SEED},
    example='mixkit app run inpainting --image dog_on_bench.png --prompt "dog" '
            '--inpaint_prompt "a cat sitting on a bench" --seed 0 --output out/',
)

APPS: tuple[AppSpec, ...] = (TEXT2IMAGE, IMAGE2IMAGE, UPSCALING, DUAL_GUIDED, TEXT2VIDEO, INPAINTING)
