"""Image and video generation steps: thin wrappers over `diffusers` pipelines (decode the keys -> the pipeline ->
`result`). Nothing here re-implements a pipeline; each step only chooses which `diffusers` class loads the folder
and which app parameters it passes on.

Parameters follow PaddleMIX's AppFlow tasks (PaddlePaddle/PaddleMIX paddlemix/appflow/, read at commits
095048d, 17def88, 734770d: `text2image_generation.py`, `image2image_text_guided_generation.py`,
`text2image_inpaiting.py`, `text2video_generation.py`, `text2audio_generation.py`); a parameter left at None is
not passed, so the pipeline's own default applies (e.g. height/width: the model's native size). `seed` seeds a
CPU `torch.Generator`, which `diffusers` uses to draw the initial noise on the CPU, so one seed gives the same noise
on every device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from mixkit.apps.appflow.media import AudioClip, VideoFrames
from mixkit.apps.appflow.step import Step, StepInputError
from mixkit.apps.appflow.steps.common import state_image
from mixkit.pipelines.common import pick_device


def seeded_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator seeded with `seed` (None: the pipeline draws from torch's global generator)."""
    if seed is None:
        return None
    return torch.Generator("cpu").manual_seed(int(seed))


def state_text(state: dict[str, Any], key: str) -> str:
    value = state[key]
    if not isinstance(value, str) or not value.strip():
        raise StepInputError(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def load_pipeline(class_name: str, model_dir: Path | str, device: str | None, **kwargs: Any) -> Any:
    """`diffusers.<class_name>.from_pretrained(model_dir)` in float32 on `device` (the default: CUDA if present)."""
    import diffusers

    pipeline = getattr(diffusers, class_name).from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    return pipeline.to(pick_device(device))


class DiffusionStep(Step):
    """Load a `diffusers` pipeline once; per call pass it the prompt (and image) keys and the app parameters
    named in `passes` that are not None, with the seeded generator; put its first output under `result`."""

    pipeline_class: ClassVar[str]  # the `diffusers` class whose from_pretrained loads the folder
    passes: ClassVar[tuple[str, ...]] = ()  # app parameters handed to the pipeline under the same name
    reads = ("prompt",)
    writes = ("result",)

    def __init__(self, model_dir: Path | str, device: str | None = None, scheduler: str | None = None,
                 **options: Any):
        super().__init__(model_dir, device, **options)
        self.pipeline = load_pipeline(self.pipeline_class, model_dir, device, **options)
        if scheduler is not None:  # e.g. PaddleMIX's text-to-video swaps in DPMSolverMultistepScheduler
            import diffusers

            scheduler_class = getattr(diffusers, scheduler)
            self.pipeline.scheduler = scheduler_class.from_config(self.pipeline.scheduler.config)

    def pipeline_inputs(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": state_text(state, "prompt")}

    def pipeline_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {name: params[name] for name in self.passes if params.get(name) is not None}

    def result(self, output: Any, state: dict[str, Any], params: dict[str, Any]) -> Any:
        return output.images[0]

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        arguments = {**self.pipeline_inputs(state), **self.pipeline_params(params)}
        with torch.inference_mode():
            output = self.pipeline(**arguments, generator=seeded_generator(params.get("seed")))
        state["result"] = self.result(output, state, params)
        return state


IMAGE_PARAMS = ("negative_prompt", "guidance_scale", "num_inference_steps")


class TextToImageStep(DiffusionStep):
    """Stable Diffusion 1.x / 2.x / XL text-to-image (`AutoPipelineForText2Image` picks the class)."""

    pipeline_class = "AutoPipelineForText2Image"
    passes = (*IMAGE_PARAMS, "height", "width")


class ImageToImageStep(DiffusionStep):
    """Text-guided image-to-image: SD img2img, or the SD-XL refiner (`AutoPipelineForImage2Image`)."""

    pipeline_class = "AutoPipelineForImage2Image"
    passes = (*IMAGE_PARAMS, "strength")
    reads = ("image", "prompt")

    def pipeline_inputs(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": state_text(state, "prompt"), "image": state_image(state)}


class UpscaleStep(ImageToImageStep):
    """The x4 upscaler: a low-resolution image and a prompt give an image four times larger."""

    pipeline_class = "StableDiffusionUpscalePipeline"
    passes = (*IMAGE_PARAMS, "noise_level")


class DualGuidedStep(DiffusionStep):
    """Versatile Diffusion, text and image guided together: `VersatileDiffusionDualGuidedPipeline`, which current
    `diffusers` (0.42) still ships under `pipelines/deprecated` and loads from shi-labs/versatile-diffusion as it
    is. PaddleMIX's `VersatileDiffusionDualGuidedTask` runs the same pipeline and drops the unused text UNet."""

    pipeline_class = "VersatileDiffusionDualGuidedPipeline"
    passes = ("text_to_image_strength", "guidance_scale", "num_inference_steps", "height", "width")
    reads = ("image", "prompt")

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        self.pipeline.remove_unused_weights()

    def pipeline_inputs(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": state_text(state, "prompt"), "image": state_image(state)}


def union_mask(masks: list[Any], size: tuple[int, int]) -> Image.Image:
    """One "L" mask (255 inside) covering every mask in `masks` (PIL masks, 255 inside, of the image's size)."""
    if not masks:
        raise StepInputError("'seg_masks' is empty: detection found nothing to inpaint (try a lower "
                             "--box_threshold or another --prompt)")
    union = np.zeros((size[1], size[0]), dtype=bool)
    for index, mask in enumerate(masks):
        array = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
        if array.shape != union.shape:
            raise StepInputError(f"'seg_masks'[{index}] is {array.shape[1]}x{array.shape[0]}, the image "
                                 f"{size[0]}x{size[1]}")
        union |= array > 0
    return Image.fromarray(union.astype(np.uint8) * 255, mode="L")


class InpaintStep(DiffusionStep):
    """Stable Diffusion inpainting of the union of `seg_masks` with `inpaint_prompt`. As PaddleMIX's
    `StableDiffusionInpaintTask`, the pipeline works at its own size (height/width, default the model's native
    size) and the result is resized back to the input image's size."""

    pipeline_class = "AutoPipelineForInpainting"
    passes = (*IMAGE_PARAMS, "strength", "height", "width")
    reads = ("image", "seg_masks", "inpaint_prompt")

    def pipeline_inputs(self, state: dict[str, Any]) -> dict[str, Any]:
        image = state_image(state)
        return {"prompt": state_text(state, "inpaint_prompt"), "image": image,
                "mask_image": union_mask(list(state["seg_masks"]), image.size)}

    def result(self, output: Any, state: dict[str, Any], params: dict[str, Any]) -> Image.Image:
        image = output.images[0]
        size = state_image(state).size
        return image if image.size == size else image.resize(size)


class TextToVideoStep(DiffusionStep):
    """ModelScope text-to-video (`TextToVideoSDPipeline`): the frames as `VideoFrames`, written as a GIF."""

    pipeline_class = "DiffusionPipeline"
    passes = (*IMAGE_PARAMS, "num_frames", "height", "width")

    def pipeline_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**super().pipeline_params(params), "output_type": "pil"}

    def result(self, output: Any, state: dict[str, Any], params: dict[str, Any]) -> VideoFrames:
        return VideoFrames(frames=list(output.frames[0]), fps=int(params.get("fps") or 8))


class TextToAudioStep(DiffusionStep):
    """AudioLDM, AudioLDM 2 or MusicLDM (`diffusers`): a prompt gives a waveform at the vocoder's rate."""

    pipeline_class = "DiffusionPipeline"
    passes = ("negative_prompt", "guidance_scale", "num_inference_steps", "audio_length_in_s")

    def result(self, output: Any, state: dict[str, Any], params: dict[str, Any]) -> AudioClip:
        return AudioClip(samples=output.audios[0], sampling_rate=self.pipeline.vocoder.config.sampling_rate)
