"""/v1/chat/completions on a tiny InstructBLIP (written by `transformers`, loaded through `load_pipeline`):
single-turn answers equal `mixkit predict chat`'s and are batched, history and streaming equal the pipeline's
own `chat`, and the OpenAI format's unsupported parts are refused by name."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mixkit.apps.predict import predict_chat
from mixkit.apps.predict_config import ChatPredictConfig
from mixkit.models.settings import GenerationSettings
from mixkit.pipelines.chat import ChatTurn
from tests.serve.conftest import metric_value, serving

PROMPTS = ["describe the small red circle", "what is on the left?", "a large blue square", "what shape is it?"]
GREEDY = {"num_beams": 1, "max_tokens": 6}


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory) -> Path:
    from mixkit.testing import save_transformers_instructblip

    folder = tmp_path_factory.mktemp("tiny-instructblip")
    save_transformers_instructblip(folder, "opt")
    return folder


@pytest.fixture(scope="module")
def chat_pipeline(instructblip: Path):
    from mixkit.pipelines.auto import load_pipeline

    return load_pipeline(str(instructblip), task="chat")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def user(text: str, image: Path | None = None) -> dict:
    parts = [{"type": "text", "text": text}]
    if image is not None:
        parts.append({"type": "image_url", "image_url": {"url": data_uri(image)}})
    return {"role": "user", "content": parts}


def test_single_turn_equals_predict_chat_and_is_batched(chat_pipeline, instructblip: Path,
                                                        image_files: list[Path]) -> None:
    rows = [(image, PROMPTS[0]) for image in image_files]  # one instruction: one `predict chat` call to compare
    with serving(chat_pipeline, str(instructblip), name="tiny-instructblip", max_wait_ms=500) as client:
        assert client.get("/health").json()["tasks"] == ["caption", "vqa", "chat"]

        def ask(row: tuple[Path, str]) -> dict:
            response = client.post("/v1/chat/completions", json={"model": "x", "messages": [user(row[1], row[0])],
                                                                 **GREEDY})
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(len(rows)) as pool:
            bodies = list(pool.map(ask, rows))
        metrics = client.get("/metrics").text
    assert metric_value(metrics, "mixkit_batch_size_sum") == 4
    assert metric_value(metrics, "mixkit_batch_size_count") < 4  # four conversations, fewer model calls
    expected = predict_chat(ChatPredictConfig(model=str(instructblip), image=[str(p) for p in image_files],
                                              prompt=PROMPTS[0], num_beams=1, max_new_tokens=6))
    for body, record in zip(bodies, expected):
        assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": record["response"]},
                                    "finish_reason": "stop"}]
        assert body["object"] == "chat.completion" and body["model"] == "tiny-instructblip"
        assert body["id"].startswith("chatcmpl-")
    assert len({body["choices"][0]["message"]["content"] for body in bodies}) > 1


def sse_events(text: str) -> list:
    assert text.endswith("data: [DONE]\n\n")
    events = [block.removeprefix("data: ") for block in text.split("\n\n") if block]
    return [json.loads(event) for event in events[:-1]]


def test_history_and_streaming_equal_the_pipelines_chat(chat_pipeline, instructblip: Path,
                                                         image_files: list[Path]) -> None:
    image = image_files[2]
    messages = [user(PROMPTS[0], image), {"role": "assistant", "content": "a red circle"},
                {"role": "user", "content": PROMPTS[3]}]
    settings = GenerationSettings(num_beams=1, max_new_tokens=8, min_new_tokens=8, length_penalty=1.0)
    from PIL import Image

    turns = [ChatTurn("user", PROMPTS[0]), ChatTurn("assistant", "a red circle"), ChatTurn("user", PROMPTS[3])]
    expected_pieces: list[str] = []
    expected = chat_pipeline.chat(Image.open(image).convert("RGB"), turns, settings, on_text=expected_pieces.append)
    body = {"messages": messages, "max_completion_tokens": 8, "min_new_tokens": 8, "num_beams": 1}
    with serving(chat_pipeline, str(instructblip)) as client:
        plain = client.post("/v1/chat/completions", json=body).json()
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert plain["choices"][0]["message"]["content"] == expected
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [event["choices"][0]["delta"]["content"] for event in events[1:-1]]
    assert pieces == expected_pieces and "".join(pieces).strip() == expected  # each piece as the model gives it
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all(event["object"] == "chat.completion.chunk" and event["id"] == events[0]["id"] for event in events)


class _ImageHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


def test_remote_images_only_from_allowed_hosts(chat_pipeline, instructblip: Path, image_files: list[Path]) -> None:
    handler = functools.partial(_ImageHandler, directory=str(image_files[0].parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{image_files[0].name}"
        remote = {"messages": [{"role": "user", "content": [{"type": "text", "text": PROMPTS[1]},
                                                            {"type": "image_url", "image_url": {"url": url}}]}],
                  **GREEDY}
        local = {"messages": [user(PROMPTS[1], image_files[0])], **GREEDY}
        with serving(chat_pipeline, str(instructblip)) as client:
            refused = client.post("/v1/chat/completions", json=remote)
        with serving(chat_pipeline, str(instructblip), allow_image_host=["127.0.0.1"]) as client:
            fetched = client.post("/v1/chat/completions", json=remote)
            expected = client.post("/v1/chat/completions", json=local)
        server.shutdown()
    assert refused.status_code == 400 and "--allow-image-host" in refused.json()["error"]
    assert fetched.status_code == 200 and fetched.json()["choices"] == expected.json()["choices"]


def two_images(image: Path) -> dict:
    return {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "compare"}, {"type": "image_url", "image_url": {"url": data_uri(image)}},
        {"type": "image_url", "image_url": {"url": data_uri(image)}}]}]}


BAD = [
    ("system", lambda image: {"messages": [{"role": "system", "content": "be brief"}, user("hi", image)]},
     "role 'system'"),
    ("two images", two_images, "one image per conversation"),
    ("sampling", lambda image: {"messages": [user("hi", image)], "temperature": 0.7}, "temperature"),
    ("n", lambda image: {"messages": [user("hi", image)], "n": 2}, "n: 2"),
    ("typo", lambda image: {"messages": [user("hi", image)], "max_token": 5}, "max_token"),
    ("bad base64", lambda image: {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}]},
     "base64"),
    ("not an image", lambda image: {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(b"plain text").decode()}}]}]}, "not an image"),
    ("ends with assistant", lambda image: {"messages": [user("hi", image), {"role": "assistant", "content": "yo"}]},
     "end with a user message"),
    ("empty message", lambda image: {"messages": [user("  ", image)]}, "empty"),
    ("no messages", lambda image: {"messages": []}, "messages"),
    ("no image", lambda image: {"messages": [{"role": "user", "content": "hi"}]}, "image"),
    ("beams over cap", lambda image: {"messages": [user("hi", image)], "num_beams": 99}, "--max-beams"),
]


@pytest.mark.parametrize("make, words", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_chat_requests_are_400(chat_pipeline, instructblip: Path, image_files: list[Path], make, words) -> None:
    with serving(chat_pipeline, str(instructblip)) as client:
        response = client.post("/v1/chat/completions", json=make(image_files[0]))
        assert response.status_code in (400, 415), response.text
        assert words in response.json()["error"]
        garbled = client.post("/v1/chat/completions", content=b"{not json",
                              headers={"content-type": "application/json"})
        assert garbled.status_code == 400 and "not valid JSON" in garbled.json()["error"]
