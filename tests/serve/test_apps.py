"""POST /v1/apps/{app}: the answer equals what `mixkit app run --json` prints for the same tiny models and inputs
(media inline as data URIs with the pixels of the files the command writes), for a detection app and a generation
app; an app the server did not load is a 404, bad input a 4xx naming the field, and the server keeps answering."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixkit.cli import main
from tests.apps.appflow_models import shape_image, vision_models  # noqa: F401  (a session fixture)
from tests.serve.conftest import png_bytes, serving

PROMPT = "Circle"
GENERATION = {"num_inference_steps": "2", "height": "32", "width": "32", "negative_prompt": "blue", "seed": "9"}


def has_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def app_models(vision_models, tmp_path_factory) -> dict[str, list[str]]:  # noqa: F811
    models = {"openset_det_sam": [str(vision_models.grounding_dino), str(vision_models.sam)]}
    if has_diffusers():
        from mixkit.apps.appflow.tiny_generation import build_tiny_stable_diffusion

        folder = tmp_path_factory.mktemp("serve-sd") / "sd"
        build_tiny_stable_diffusion(folder)
        models["text2image_generation"] = [str(folder)]
    models["audio_chat"] = audio_chat_models(tmp_path_factory.mktemp("serve-audio"))
    return models


def audio_chat_models(root: Path) -> list[str]:
    from mixkit.apps.appflow.tiny_audio import build_tiny_vits, build_tiny_whisper
    from mixkit.apps.appflow.tiny_generation import build_tiny_causal_lm

    build_tiny_whisper(root / "whisper")
    build_tiny_causal_lm(root / "llm")
    build_tiny_vits(root / "vits")
    return [str(root / "whisper"), str(root / "llm"), str(root / "vits")]


@pytest.fixture(scope="module")
def client(blip2_pipeline, app_models):
    from mixkit.serve.apps import load_apps

    apps = load_apps(list(app_models), [model for models in app_models.values() for model in models], "cpu")
    with serving(blip2_pipeline, "tiny", apps=apps, max_image_pixels=100_000) as client:
        yield client


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve-app-image") / "in.png"
    shape_image(150, 130, "red").save(path)
    return path


def app_run_json(capsys, app: str, models: list[str], output: Path, *options: str) -> dict:
    assert main(["app", "run", app, "--models", *models, *options, "--device", "cpu", "--output", str(output),
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def pixels_of_uri(uri: str, media_type: str = "image/png") -> np.ndarray:
    header, _, data = uri.partition(",")
    assert header == f"data:{media_type};base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def pixels_of_file(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_detection_answer_equals_mixkit_app_run_json(client, app_models, image_path, tmp_path, capsys) -> None:
    expected = app_run_json(capsys, "openset_det_sam", app_models["openset_det_sam"], tmp_path, "--image",
                            str(image_path), "--prompt", PROMPT, "--box_threshold", "0.35")
    response = client.post("/v1/apps/openset_det_sam", files={"image": ("in.png", image_path.read_bytes())},
                           data={"prompt": PROMPT, "box_threshold": "0.35"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == set(expected) - {"files"}
    assert answer["image"] == "in.png" and answer["prompt"] == expected["prompt"] == PROMPT
    assert (answer["boxes"], answer["labels"], answer["scores"]) == (expected["boxes"], expected["labels"],
                                                                     expected["scores"])
    assert len(answer["seg_masks"]) == len(expected["seg_masks"]) > 0
    for uri, path in zip([*answer["seg_masks"], answer["picture"]], [*expected["seg_masks"], expected["picture"]]):
        np.testing.assert_array_equal(pixels_of_uri(uri), pixels_of_file(path))


def test_generation_answer_equals_mixkit_app_run_json(client, app_models, tmp_path, capsys) -> None:
    if "text2image_generation" not in app_models:
        pytest.skip("diffusers is not installed (pip install 'mixkit[apps]')")
    options = [token for key, value in GENERATION.items() for token in (f"--{key}", value)]
    expected = app_run_json(capsys, "text2image_generation", app_models["text2image_generation"], tmp_path,
                            "--prompt", "a red circle", *options)
    response = client.post("/v1/apps/text2image_generation", data={"prompt": "a red circle", **GENERATION})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == set(expected) - {"files"} and answer["prompt"] == "a red circle"
    np.testing.assert_array_equal(pixels_of_uri(answer["result"]), pixels_of_file(expected["result"]))
    assert pixels_of_uri(answer["result"]).shape[:2] == (32, 32)


def test_audio_answer_equals_mixkit_app_run_json(client, app_models, tmp_path, capsys) -> None:
    from mixkit.apps.appflow.media import AudioClip, write_media

    time = np.arange(4000) / 8000
    speech = write_media(AudioClip(0.3 * np.sin(2 * np.pi * 220 * time), 8000), tmp_path, "question")
    # The template ends on a word: a random tiny LM repeats the last token, so the reply is words VITS can say.
    fields = {"prompt": "{} a dog and a cat", "max_new_tokens": "4", "seed": "7"}
    expected = app_run_json(capsys, "audio_chat", app_models["audio_chat"], tmp_path / "out", "--audio", str(speech),
                            *[token for key, value in fields.items() for token in (f"--{key}", value)])
    response = client.post("/v1/apps/audio_chat", files={"audio": ("question.wav", speech.read_bytes())},
                           data=fields)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == set(expected) - {"files"} and answer["audio"] == "question.wav"
    assert (answer["asr_text"], answer["reply"]) == (expected["asr_text"], expected["reply"])
    header, _, data = answer["result"].partition(",")
    assert header == "data:audio/wav;base64" and base64.b64decode(data) == Path(expected["result"]).read_bytes()
    bad = client.post("/v1/apps/audio_chat", files={"audio": ("x.wav", b"RIFF....")}, data={"prompt": "{}"})
    assert_error(bad, 400, "'audio': cannot read x.wav as a PCM WAV file")
    assert "mixkit-app-" not in bad.json()["error"]  # no server path in the message


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert all(word in message for word in words), message


def test_unknown_apps_and_bad_input_are_4xx_and_the_server_keeps_answering(client, app_models,
                                                                            image_path) -> None:
    image = {"image": ("in.png", image_path.read_bytes())}
    assert_error(client.post("/v1/apps/inpainting", files=image), 404, "'inpainting' is not served here",
                 "openset_det_sam")
    assert_error(client.post("/v1/apps/no_such_app", files=image), 404, "not served here")
    detect = "/v1/apps/openset_det_sam"
    assert_error(client.post(detect, files=image, data={"prompt": PROMPT, "guidance_scale": "3"}), 400,
                 "unknown field(s) guidance_scale", "box_threshold")
    assert_error(client.post(detect, files=image, data={"prompt": PROMPT, "box_threshold": "high"}), 400,
                 "box_threshold:")
    assert_error(client.post(detect, files=image), 400, "'prompt'")  # the detection step needs it
    assert_error(client.post(detect, data={"prompt": PROMPT}), 400, "'image'")
    assert_error(client.post(detect, data={"prompt": PROMPT, "image": "/etc/hostname"}), 400,
                 "image: send exactly one file")  # never a path on the server
    assert_error(client.post(detect, files=image, data={"prompt": " "}), 400, "prompt: missing or empty")
    assert_error(client.post(detect, files=image, data={"prompt": "x" * 2001}), 400, "--max-text-chars")
    assert_error(client.post(detect, files={"image": ("a.txt", b"not an image")}, data={"prompt": PROMPT}), 415,
                 "image: not an image")
    assert_error(client.post(detect, files={"image": ("big.png", png_bytes((400, 400)))}, data={"prompt": PROMPT}),
                 413, "--max-image-pixels")
    truncated = image_path.read_bytes()[:200]
    assert_error(client.post(detect, files={"image": ("cut.png", truncated)}, data={"prompt": PROMPT}), 400, "image")
    assert_error(client.post(detect, json={"prompt": PROMPT}), 415, "multipart/form-data")
    if "text2image_generation" in app_models:
        generate = "/v1/apps/text2image_generation"
        assert_error(client.post(generate, files=image, data={"prompt": "a cat"}), 400, "unknown field(s) image")
        assert_error(client.post(generate, data={"prompt": "a cat", "seed": "many"}), 400, "seed:")
        assert_error(client.post(generate, data={"prompt": "a cat", "height": "100000"}), 400,
                     "height: must be a whole number in [1, 316]", "--max-image-pixels")
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["apps"] == list(app_models)


def test_start_up_options_give_each_app_its_models(vision_models, tmp_path) -> None:  # noqa: F811
    from mixkit.apps.appflow.registry import get_app
    from mixkit.serve.apps import allot_models, load_apps
    from mixkit.serve.config import ServeConfig

    detect, label = get_app("openset_det_sam"), get_app("auto_label")
    dino, sam, blip2 = str(vision_models.grounding_dino), str(vision_models.sam), str(vision_models.blip2)
    assert allot_models([detect, label], [dino, sam, blip2]) == {"openset_det_sam": [dino, sam],
                                                                 "auto_label": [dino, sam, blip2]}
    with pytest.raises(ValueError, match=r"--app-models: .*blip2 fills no stage of --app openset_det_sam"):
        allot_models([detect], [dino, blip2])
    with pytest.raises(ValueError, match="unknown app 'nope'"):
        load_apps(["nope"], None, "cpu")
    with pytest.raises(ValueError, match="--app-models: name the apps"):
        ServeConfig(model="m", app_models=[dino]).check()
    from mixkit.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m", "--app", "openset_det_sam", "--app-models", dino, sam])
    assert (args.app, args.app_models) == (["openset_det_sam"], [dino, sam])
