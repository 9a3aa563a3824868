"""The generation apps on tiny random `diffusers` pipelines: each app's `result` equals the library's own pipeline
on the same folder, inputs and seed (<= 1/255 per pixel), folders are recognised by kind, bad input fails clearly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mixkit.apps.appflow import Appflow  # noqa: E402
from mixkit.apps.appflow.media import VideoFrames, write_media  # noqa: E402
from mixkit.apps.appflow.step import StepInputError  # noqa: E402
from mixkit.apps.appflow.steps.diffusion import union_mask  # noqa: E402
from mixkit.apps.appflow.steps.llm import split_inpaint_reply  # noqa: E402
from mixkit.apps.appflow.tiny import build_tiny_grounding_dino, build_tiny_sam  # noqa: E402
from mixkit.apps.appflow.tiny_generation import (build_tiny_causal_lm, build_tiny_stable_diffusion,  # noqa: E402
                                                 build_tiny_stable_diffusion_xl, build_tiny_text_to_video,
                                                 build_tiny_upscaler, build_tiny_versatile_diffusion)

PROMPT = "a red circle on the left"
STEPS = 2


def _image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.RandomState(seed).randint(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def assert_same_image(ours: Image.Image, theirs: Image.Image) -> None:
    assert ours.size == theirs.size
    difference = np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16))
    assert difference.max() <= 1, f"images differ by up to {difference.max()}/255"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("generation")
    build_tiny_stable_diffusion(root / "sd")
    build_tiny_stable_diffusion(root / "sd_inpaint", inpainting=True)
    build_tiny_upscaler(root / "upscaler")
    build_tiny_text_to_video(root / "video")
    build_tiny_versatile_diffusion(root / "versatile")
    return root


def test_text2image_equals_the_diffusers_pipeline_and_seed_decides(folders):
    from diffusers import StableDiffusionPipeline

    app = Appflow("text2image_generation", models=[str(folders / "sd")], device="cpu", num_inference_steps=STEPS,
                  height=32, width=32)
    assert app.task_path() == [str(folders / "sd")]
    ours = app(prompt=PROMPT, seed=3)["result"]
    pipeline = StableDiffusionPipeline.from_pretrained(folders / "sd")
    theirs = pipeline(PROMPT, num_inference_steps=STEPS, guidance_scale=7.5, height=32, width=32,
                      generator=_generator(3)).images[0]
    assert_same_image(ours, theirs)
    other = app(prompt=PROMPT, seed=4)["result"]
    assert np.abs(np.asarray(other, dtype=np.int16) - np.asarray(ours, dtype=np.int16)).max() > 1


def test_sdxl_text2image_and_img2img_equal_the_diffusers_pipelines(tmp_path):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    build_tiny_stable_diffusion_xl(tmp_path / "sdxl")
    text2image = Appflow("text2image_generation", models=[str(tmp_path / "sdxl")], device="cpu")
    ours = text2image(prompt=PROMPT, num_inference_steps=STEPS, height=32, width=32, seed=0)["result"]
    theirs = StableDiffusionXLPipeline.from_pretrained(tmp_path / "sdxl")(
        PROMPT, num_inference_steps=STEPS, guidance_scale=7.5, height=32, width=32,
        generator=_generator(0)).images[0]
    assert_same_image(ours, theirs)
    image = _image((32, 32))
    image2image = Appflow("image2image_text_guided_generation", models=[str(tmp_path / "sdxl")], device="cpu")
    ours = image2image(image=image, prompt=PROMPT, num_inference_steps=STEPS, seed=1)["result"]
    theirs = StableDiffusionXLImg2ImgPipeline.from_pretrained(tmp_path / "sdxl")(
        PROMPT, image=image, strength=0.75, guidance_scale=7.5, num_inference_steps=STEPS,
        generator=_generator(1)).images[0]
    assert_same_image(ours, theirs)


def test_a_missing_default_model_names_what_to_fetch(tmp_path, monkeypatch):
    from mixkit.apps.appflow.models import AppModelNotFoundError

    monkeypatch.setenv("MIXKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AppModelNotFoundError, match="hf download stabilityai/stable-diffusion-2 "):
        Appflow("text2image_generation")


def test_image2image_equals_the_diffusers_pipeline(folders):
    from diffusers import StableDiffusionImg2ImgPipeline

    image = _image((32, 32))
    app = Appflow("image2image_text_guided_generation", models=[str(folders / "sd")], device="cpu")
    ours = app(image=image, prompt=PROMPT, negative_prompt="blue", num_inference_steps=STEPS, seed=0)["result"]
    pipeline = StableDiffusionImg2ImgPipeline.from_pretrained(folders / "sd")
    theirs = pipeline(PROMPT, image=image, negative_prompt="blue", strength=0.75, guidance_scale=7.5,
                      num_inference_steps=STEPS, generator=_generator(0)).images[0]
    assert_same_image(ours, theirs)


def test_upscaling_equals_the_diffusers_pipeline(folders):
    from diffusers import StableDiffusionUpscalePipeline

    image = _image((16, 16))
    app = Appflow("image2image_text_guided_upscaling", models=[str(folders / "upscaler")], device="cpu")
    ours = app(image=image, prompt=PROMPT, num_inference_steps=STEPS, seed=1)["result"]
    assert ours.size == (64, 64)
    pipeline = StableDiffusionUpscalePipeline.from_pretrained(folders / "upscaler")
    theirs = pipeline(PROMPT, image=image, num_inference_steps=STEPS, generator=_generator(1)).images[0]
    assert_same_image(ours, theirs)


def test_dual_guided_equals_versatile_diffusion(folders):
    from diffusers import VersatileDiffusionDualGuidedPipeline

    image = _image((32, 32))
    app = Appflow("dual_text_and_image_guided_generation", models=[str(folders / "versatile")], device="cpu")
    ours = app(image=image, prompt=PROMPT, num_inference_steps=STEPS, height=32, width=32, seed=2)["result"]
    pipeline = VersatileDiffusionDualGuidedPipeline.from_pretrained(folders / "versatile")
    pipeline.remove_unused_weights()
    theirs = pipeline(prompt=PROMPT, image=image, text_to_image_strength=0.75, num_inference_steps=STEPS,
                      height=32, width=32, generator=_generator(2)).images[0]
    assert_same_image(ours, theirs)


def test_text_to_video_equals_the_pipeline_and_writes_a_gif(folders, tmp_path):
    from diffusers import DPMSolverMultistepScheduler, TextToVideoSDPipeline

    app = Appflow("text_to_video_generation", models=[str(folders / "video")], device="cpu")
    video = app(prompt=PROMPT, num_inference_steps=STEPS, num_frames=3, height=32, width=32, seed=0)["result"]
    assert isinstance(video, VideoFrames) and len(video.frames) == 3 and video.fps == 8
    pipeline = TextToVideoSDPipeline.from_pretrained(folders / "video")
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)  # as PaddleMIX
    frames = pipeline(PROMPT, num_inference_steps=STEPS, num_frames=3, height=32, width=32, output_type="pil",
                      generator=_generator(0)).frames[0]
    for ours, theirs in zip(video.frames, frames):
        assert_same_image(ours, theirs)
    path = write_media(video, tmp_path, "result")
    with Image.open(path) as gif:
        assert path.suffix == ".gif" and gif.n_frames == 3 and gif.size == (32, 32)


def test_inpainting_runs_grounding_dino_sam_then_equals_the_inpaint_pipeline(folders, tmp_path):
    from diffusers import StableDiffusionInpaintPipeline

    build_tiny_grounding_dino(tmp_path / "dino")
    build_tiny_sam(tmp_path / "sam")
    image = _image((128, 128))
    app = Appflow("inpainting", models=[str(tmp_path / "dino"), str(tmp_path / "sam"), str(folders / "sd_inpaint")],
                  device="cpu", box_threshold=0.0, text_threshold=0.0, num_inference_steps=STEPS, height=32,
                  width=32)
    out = app(image=image, prompt="circle", inpaint_prompt=PROMPT, seed=5)
    assert len(out["boxes"]) == len(out["seg_masks"]) > 0
    mask = union_mask(out["seg_masks"], image.size)
    pipeline = StableDiffusionInpaintPipeline.from_pretrained(folders / "sd_inpaint")
    theirs = pipeline(PROMPT, image=image, mask_image=mask, height=32, width=32, num_inference_steps=STEPS,
                      generator=_generator(5)).images[0].resize(image.size)
    assert out["result"].size == image.size
    assert_same_image(out["result"], theirs)


def test_inpainting_llm_splits_the_request_as_generate_does(folders, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixkit.apps.appflow.steps.llm import SPLIT_INSTRUCTION, InpaintRequestStep

    build_tiny_causal_lm(tmp_path / "llm")
    step = InpaintRequestStep(tmp_path / "llm", device="cpu")
    out = step({"prompt": "replace the dog with a cat"}, {"max_new_tokens": 12})
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "llm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")
    ids = tokenizer(SPLIT_INSTRUCTION.format("replace the dog with a cat"), return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert out["llm_reply"] == reply and reply
    assert (out["prompt"], out["inpaint_prompt"]) == tuple(part or "replace the dog with a cat"
                                                            for part in split_inpaint_reply(reply))


def test_split_inpaint_reply_reads_the_two_labelled_lines():
    assert split_inpaint_reply("main_object: dog\nother prompt: a cat on a bench") == ("dog", "a cat on a bench")
    assert split_inpaint_reply("  dog  ") == ("dog", "dog")
    with pytest.raises(ValueError, match="empty"):
        split_inpaint_reply("\n \n")


def test_union_mask_and_its_errors():
    first, second = Image.new("L", (4, 2), 0), Image.new("L", (4, 2), 0)
    first.putpixel((0, 0), 255)
    second.putpixel((3, 1), 255)
    union = np.asarray(union_mask([first, second], (4, 2)))
    assert union.tolist() == [[255, 0, 0, 0], [0, 0, 0, 255]]
    with pytest.raises(StepInputError, match="found nothing"):
        union_mask([], (4, 2))
    with pytest.raises(StepInputError, match=r"'seg_masks'\[0\] is 3x2"):
        union_mask([Image.new("L", (3, 2))], (4, 2))


def test_bad_inputs_name_the_key(folders):
    app = Appflow("text2image_generation", models=[str(folders / "sd")], device="cpu")
    with pytest.raises(StepInputError, match="'prompt'"):
        app(num_inference_steps=1)
    with pytest.raises(StepInputError, match="'prompt' must be a non-empty string"):
        app(prompt="  ", num_inference_steps=1)
    with pytest.raises(ValueError, match="no parameter strenght"):
        Appflow("text2image_generation", models=[str(folders / "sd")], strenght=0.5)


def test_folders_are_recognised_by_kind_and_defaults_are_paddlemix(folders):
    with pytest.raises(ValueError, match="StableDiffusionUpscalePipeline folder fills no stage"):
        Appflow("text2image_generation", models=[str(folders / "upscaler")])
    apps = {info["app"]: info for info in Appflow.list()}
    assert apps["text2image_generation"]["default_models"] == ["stabilityai/stable-diffusion-2"]
    assert apps["image2image_text_guided_generation"]["default_models"] == ["Linaqruf/anything-v3.0"]
    assert apps["text_to_video_generation"]["params"]["num_inference_steps"] == 25
    assert apps["text2image_generation"]["params"]["guidance_scale"] == 7.5
    assert apps["text2image_generation"]["params"]["negative_prompt"] is None
    assert apps["inpainting"]["default_models"][-1] == "stabilityai/stable-diffusion-2-inpainting"


def test_app_run_command_writes_the_image_the_pipeline_gives(folders, tmp_path, capsys):
    import json

    from diffusers import StableDiffusionPipeline

    from mixkit.cli import main

    code = main(["app", "run", "text2image_generation", "--models", str(folders / "sd"), "--prompt", PROMPT,
                 "--num_inference_steps", "2", "--height", "32", "--width", "32", "--negative_prompt", "blue",
                 "--seed", "9", "--output", str(tmp_path), "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["result"] == str(tmp_path / "result.png") and record["files"] == [record["result"]]
    theirs = StableDiffusionPipeline.from_pretrained(folders / "sd")(
        PROMPT, negative_prompt="blue", num_inference_steps=STEPS, height=32, width=32,
        generator=_generator(9)).images[0]
    with Image.open(record["result"]) as written:
        assert_same_image(written.convert("RGB"), theirs)
    assert main(["app", "run", "text2image_generation", "--models", str(folders / "sd"), "--prompt", PROMPT,
                 "--guidance_scale", "high", "--output", str(tmp_path)]) == 2
    assert "--guidance_scale" in capsys.readouterr().err
