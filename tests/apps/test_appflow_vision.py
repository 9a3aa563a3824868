"""The vision apps equal the libraries' own pipelines on the same tiny random weights: Grounding DINO boxes =
`post_process_grounded_object_detection`, SAM masks = `post_process_masks`, captions = `transformers`' generate,
Qwen2-VL = the processor's inputs and `generate`; plus noun tags, the framework's list / help / errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixkit import Appflow
from mixkit.apps.appflow.models import AppModelNotFoundError
from mixkit.apps.appflow.step import StepInputError
from mixkit.apps.appflow.steps.detection import detection_prompt
from mixkit.apps.appflow.steps.tagging import noun_tags, tag_prompt
from tests.apps.appflow_models import shape_image


def test_detection_prompt_is_lower_cased_and_ends_with_a_full_stop() -> None:
    assert detection_prompt("circle") == "circle."
    assert detection_prompt("  Red Circle. ") == "red circle."
    assert detection_prompt("dog,cat") == "dog,cat."
    with pytest.raises(StepInputError, match="prompt"):
        detection_prompt("   ")


def test_noun_tags_offline() -> None:
    assert noun_tags("two dogs and a cat are sitting on the tables") == ["dog", "cat", "table"]
    assert tag_prompt("a red circle next to a red circle and a car") == "circle,car"
    assert tag_prompt("") == ""


def _transformers_detection(folder, image, prompt, box_threshold=0.3, text_threshold=0.25):
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    processor = AutoProcessor.from_pretrained(folder)
    model = GroundingDinoForObjectDetection.from_pretrained(folder).eval()
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    return processor.post_process_grounded_object_detection(outputs, inputs.input_ids, threshold=box_threshold,
                                                            text_threshold=text_threshold,
                                                            target_sizes=[image.size[::-1]])[0]


def _transformers_masks(folder, image, boxes):
    from transformers import SamModel, SamProcessor

    processor, model = SamProcessor.from_pretrained(folder), SamModel.from_pretrained(folder).eval()
    inputs = processor(images=image, input_boxes=[boxes], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, multimask_output=False)
    return processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"],
                                        inputs["reshaped_input_sizes"])[0][:, 0]


def test_openset_det_sam_equals_transformers(vision_models) -> None:
    image = shape_image(150, 130, "red")
    task = Appflow(app="openset_det_sam", models=[str(vision_models.grounding_dino), str(vision_models.sam)])
    out = task(image=image, prompt="Circle")

    expected = _transformers_detection(vision_models.grounding_dino, image, "circle.")
    assert len(out["boxes"]) > 1
    assert out["boxes"] == expected["boxes"].tolist()  # exact float pixels, neither rounded nor clipped
    assert out["scores"] == expected["scores"].tolist()
    assert out["labels"] == expected["text_labels"]
    assert min(s for s in out["scores"]) > 0.3  # PaddleMIX's box threshold by default

    masks = _transformers_masks(vision_models.sam, image, out["boxes"])
    assert len(out["seg_masks"]) == len(out["boxes"])
    for mask, reference in zip(out["seg_masks"], masks):
        assert mask.mode == "L" and mask.size == image.size
        array = np.asarray(mask)
        assert set(np.unique(array)) <= {0, 255}
        assert np.array_equal(array == 255, reference.numpy())

    stricter = task(image=image, prompt="circle", box_threshold=0.9, text_threshold=0.5)
    expected = _transformers_detection(vision_models.grounding_dino, image, "circle.", 0.9, 0.5)
    assert stricter["boxes"] == expected["boxes"].tolist() and len(stricter["boxes"]) < len(out["boxes"])


def test_blip2_caption_equals_transformers_generate_and_tags_feed_detection(vision_models) -> None:
    from tokenizers import AddedToken
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from mixkit.pipelines.blip2 import Blip2Pipeline

    image = shape_image(150, 130, "green")
    task = Appflow(app="image2text_generation", models=[str(vision_models.blip2)])
    out = task(image=image)

    reference = Blip2ForConditionalGeneration.from_pretrained(vision_models.blip2).eval()
    processor = Blip2Processor.from_pretrained(vision_models.blip2)
    # transformers 5.24's processor wants an AddedToken where the saved tokenizer gives a str (same "<image>").
    processor.image_token = AddedToken("<image>", normalized=False, special=True)
    settings = Blip2Pipeline.from_pretrained(str(vision_models.blip2)).settings
    inputs = processor(images=image, text=settings.prompt, return_tensors="pt")
    ids = reference.generate(**inputs, **settings.caption.generate_kwargs(),
                             eos_token_id=reference.config.text_config.eos_token_id)
    expected = processor.tokenizer.decode(ids[0, inputs.input_ids.shape[1]:], skip_special_tokens=True).strip()
    assert out["result"] == expected
    assert out["prompt"] == tag_prompt(expected)

    with_prompt = task(image=image, blip2_prompt="a large")
    assert with_prompt["result"] != out["result"] or with_prompt["prompt"] == out["prompt"]


def _qwen_folder(tmp_path):
    from mixkit.apps.appflow.tiny import build_tiny_qwen2_vl
    from mixkit.testing import randomize_

    folder = tmp_path / "qwen2-vl"
    model = build_tiny_qwen2_vl(folder)
    randomize_(model, seed=3, std=0.3).save_pretrained(folder)  # varied, non-degenerate text
    return folder


def _qwen_processor(folder, monkeypatch):
    """`transformers`' own Qwen2VLProcessor; its video processor needs torchvision, so none is checked in."""
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil, Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    real_check = ProcessorMixin.check_argument_for_proper_class
    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class",
                        lambda self, name, arg: None if name == "video_processor" else real_check(self, name, arg))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil.from_pretrained(folder), tokenizer=tokenizer,
                            video_processor=None, chat_template=tokenizer.chat_template)


def test_qwen2_vl_equals_the_processor_and_generate(tmp_path, monkeypatch) -> None:
    from transformers import Qwen2VLForConditionalGeneration

    folder = _qwen_folder(tmp_path)
    image = shape_image(90, 70, "red")
    task = Appflow(app="image2text_generation", models=[str(folder)], max_new_tokens=6)
    out = task(image=image, prompt="describe the image")

    processor = _qwen_processor(folder, monkeypatch)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe the image"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    expected_inputs = processor(images=[image], text=[text], return_tensors="pt")
    built = task.steps[0].build_inputs(messages, [image])
    assert sorted(built) == sorted(expected_inputs)
    for key in built:
        torch.testing.assert_close(built[key], expected_inputs[key], rtol=0, atol=0)

    model = Qwen2VLForConditionalGeneration.from_pretrained(folder).eval()
    ids = model.generate(**expected_inputs, max_new_tokens=6, do_sample=False)
    expected = processor.tokenizer.decode(ids[0, expected_inputs.input_ids.shape[1]:], skip_special_tokens=True)
    assert out["result"] == expected.strip() and out["result"]

    follow_up = task(prompt="a red circle?")  # multi-turn: the image and first answer stay in the conversation
    assert isinstance(follow_up["result"], str)
    assert [m["role"] for m in task.steps[0].messages] == ["user", "assistant", "user", "assistant"]


def test_minigpt4_step_runs_the_chat_pipeline(tmp_path) -> None:
    from mixkit.testing import build_tiny_minigpt4

    pipeline = build_tiny_minigpt4(tmp_path / "minigpt4")
    image = shape_image(60, 50, "blue")
    task = Appflow(app="image2text_generation", models=[str(tmp_path / "minigpt4")], max_new_tokens=5)
    out = task(image=image, minigpt4_text="what is this?")
    settings = pipeline.chat_settings.with_overrides(max_new_tokens=5)
    assert out["result"] == pipeline.respond([image], ["what is this?"], settings)[0]


def test_list_help_tasks_and_task_path(vision_models) -> None:
    apps = {app["app"]: app for app in Appflow.list()}
    assert {"image2text_generation", "openset_det_sam", "auto_label"} <= set(apps)
    assert apps["openset_det_sam"]["default_models"] == ["IDEA-Research/grounding-dino-tiny",
                                                         "facebook/sam-vit-huge"]
    assert apps["openset_det_sam"]["params"] == {"box_threshold": 0.3, "text_threshold": 0.25}
    assert set(Appflow.tasks()) == set(apps)
    task = Appflow(app="openset_det_sam", models=[str(vision_models.grounding_dino), str(vision_models.sam)])
    text = task.help()
    assert "facebook/sam-vit-huge (default)" in text and "box_threshold=0.3" in text
    assert str(vision_models.sam) in text
    assert task.task_path() == [str(vision_models.grounding_dino), str(vision_models.sam)]


def test_errors_name_what_is_wrong(vision_models, tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="unknown app 'nope'"):
        Appflow(app="nope")
    with pytest.raises(ValueError, match="no parameter guidance_scale"):
        Appflow(app="openset_det_sam", guidance_scale=3.0)
    monkeypatch.setenv("MIXKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("MIXKIT_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(AppModelNotFoundError, match="hf download IDEA-Research/grounding-dino-tiny"):
        Appflow(app="openset_det_sam", models=["IDEA-Research/grounding-dino-tiny", str(vision_models.sam)])
    task = Appflow(app="openset_det_sam", models=[str(vision_models.grounding_dino), str(vision_models.sam)])
    with pytest.raises(StepInputError, match="'prompt'"):
        task(image=shape_image(150, 130, "red"))
