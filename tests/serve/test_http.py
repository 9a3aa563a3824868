"""The HTTP contract in-process (httpx through Starlette's TestClient): answers equal `mixkit predict`'s,
concurrent requests share model calls, a full queue answers 503, /health, /metrics and the page."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from mixkit.apps.predict import predict_answers, predict_captions
from mixkit.apps.predict_config import CaptionPredictConfig, VqaPredictConfig
from tests.serve.conftest import metric_value, serving

QUESTIONS = ["what color is the circle?", "is there a large red square on the left?", "how many?",
             "what shape is on the top?"]
FAST = {"num_beams": 2, "max_new_tokens": 4}  # short generations keep the tests quick


def upload(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/png")}


def test_health_and_page(blip2_pipeline, tiny_blip2: Path) -> None:
    with serving(blip2_pipeline, str(tiny_blip2), name="tiny") as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "model": "tiny", "family": "blip2", "tasks": ["caption", "vqa"],
                                 "apps": [], "max_batch_size": 8, "queue_depth": 0}
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<option' not in page.text  # options are filled in by the script, from this list:
        assert 'const TASKS = ["caption", "vqa"], APPS = {};' in page.text
        # self-contained: no script, style sheet or font from elsewhere (it must work offline)
        assert "<script src" not in page.text and "<link" not in page.text and "@import" not in page.text
        assert "http://" not in page.text and "https://" not in page.text
        assert client.get("/docs").status_code == 404  # FastAPI's docs page would load a CDN's scripts


def test_caption_and_vqa_equal_predict(blip2_pipeline, tiny_blip2: Path, image_files: list[Path]) -> None:
    """Defaults are `mixkit predict`'s (the checkpoint's settings); options given go on top, as in predict."""
    image = image_files[0]
    model = str(tiny_blip2)
    with serving(blip2_pipeline, model) as client:
        default_caption = client.post("/v1/caption", files=upload(image))
        caption = client.post("/v1/caption", files=upload(image), data={"prompt": "a large", **FAST})
        default_answer = client.post("/v1/vqa", files=upload(image), data={"question": QUESTIONS[0]})
        answer = client.post("/v1/vqa", files=upload(image), data={"question": QUESTIONS[1], "length_penalty": "1.0",
                                                                   **FAST})
    expected = predict_captions(CaptionPredictConfig(model=model, image=[str(image)]))
    assert default_caption.json() == {"caption": expected[0]["caption"]}
    expected = predict_captions(CaptionPredictConfig(model=model, image=[str(image)], prompt="a large", **FAST))
    assert caption.json() == {"caption": expected[0]["caption"]}
    expected = predict_answers(VqaPredictConfig(model=model, image=[str(image)], question=[QUESTIONS[0]]))
    assert default_answer.json() == {"answer": expected[0]["answer"]}
    expected = predict_answers(VqaPredictConfig(model=model, image=[str(image)], question=[QUESTIONS[1]],
                                                length_penalty=1.0, **FAST))
    assert answer.json() == {"answer": expected[0]["answer"]}


def test_concurrent_requests_share_model_calls_and_equal_predict(blip2_pipeline, tiny_blip2: Path,
                                                                 image_files: list[Path]) -> None:
    """Eight requests at once (two per image, different questions): fewer model calls than requests, none lost,
    each answer equal to `mixkit predict`'s for its image and question."""
    pairs = [(image_files[i % 4], QUESTIONS[(i + i // 4) % 4]) for i in range(8)]
    with serving(blip2_pipeline, str(tiny_blip2), max_wait_ms=500, max_batch_size=8) as client:
        def ask(pair: tuple[Path, str]) -> dict:
            response = client.post("/v1/vqa", files=upload(pair[0]), data={"question": pair[1], **FAST})
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(len(pairs)) as pool:
            answers = [record["answer"] for record in pool.map(ask, pairs)]
        metrics = client.get("/metrics").text
    calls = metric_value(metrics, "mixkit_batch_size_count")
    answered = metric_value(metrics, "mixkit_batch_size_sum")
    assert answered == len(pairs) and calls < len(pairs), (calls, answered)
    expected = predict_answers(VqaPredictConfig(model=str(tiny_blip2), image=[str(p) for p, _ in pairs],
                                                question=[q for _, q in pairs], **FAST))
    assert answers == [record["answer"] for record in expected]
    assert len(set(answers)) > 1, "every answer equal: the comparison would be weak"


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class GatedPipeline:
    """The tiny pipeline behind a gate: its calls wait until the test opens it (to fill the queue)."""

    def __init__(self, pipeline) -> None:
        self.pipeline, self.family, self.tasks = pipeline, pipeline.family, pipeline.tasks
        self.settings = pipeline.settings
        self.entered, self.gate = threading.Event(), threading.Event()

    def caption(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(30)
        return self.pipeline.caption(*args, **kwargs)


def test_full_queue_answers_503_with_retry_after(blip2_pipeline, tiny_blip2: Path, image_files: list[Path]) -> None:
    gated = GatedPipeline(blip2_pipeline)
    with serving(gated, str(tiny_blip2), max_queue=1, max_batch_size=1, max_wait_ms=0) as client:
        def caption() -> int:
            return client.post("/v1/caption", files=upload(image_files[1]), data=FAST).status_code

        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(caption)
            assert gated.entered.wait(30)  # the worker holds the first request
            queued = pool.submit(caption)
            wait_until(lambda: client.get("/health").json()["queue_depth"] == 1)  # the second one is queued
            refused = client.post("/v1/caption", files=upload(image_files[1]), data=FAST)
            gated.gate.set()
            assert (running.result(), queued.result()) == (200, 200)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "retry" in refused.json()["error"]
        assert client.post("/v1/caption", files=upload(image_files[1]), data=FAST).status_code == 200


def test_classify_equals_predict(tmp_path: Path, image_files: list[Path]) -> None:
    from mixkit.apps.predict import predict_classify
    from mixkit.apps.predict_config import ClassifyPredictConfig
    from mixkit.pipelines.auto import load_pipeline
    from mixkit.testing import build_tiny_clip

    build_tiny_clip(tmp_path / "clip")
    model = str(tmp_path / "clip")
    labels = "red circle, blue square,green triangle"
    with serving(load_pipeline(model), model, max_wait_ms=300) as client:
        assert client.get("/health").json()["tasks"] == ["classify"]
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda image: client.post("/v1/classify", files=upload(image),
                                                                data={"labels": labels, "template": "a {}"}),
                                      image_files[:3]))
        not_generative = client.post("/v1/caption", files=upload(image_files[0]))
    expected = predict_classify(ClassifyPredictConfig(model=model, image=[str(p) for p in image_files[:3]],
                                                      labels=labels, template="a {}"))
    for response, record in zip(responses, expected):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["labels"] == ["red circle", "blue square", "green triangle"] == record["labels"]
        torch.testing.assert_close(torch.tensor(body["probs"]), torch.tensor(record["probs"]))
    assert not_generative.status_code == 400 and "not a model for caption" in not_generative.json()["error"]


def test_serve_command_usage_errors(tmp_path: Path, tiny_blip2: Path, capsys) -> None:
    """Bad options and missing checkpoints end `mixkit serve` before it listens: one line, exit code 2."""
    from mixkit.cli import main

    missing = tmp_path / "missing"
    assert main(["serve", "--model", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_blip2), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size: must be >= 1" in capsys.readouterr().err
