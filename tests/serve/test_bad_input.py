"""Bad input never crashes the server: every class gets a 4xx `{"error": ...}` naming the problem, the metrics
count it, and the server answers the next good request."""

from __future__ import annotations

import struct
import zlib

import pytest

from tests.serve.conftest import png_bytes, serving

FAST = {"num_beams": "1", "max_new_tokens": "2"}


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims `width` x `height` pixels: a few bytes that would decode to
    gigabytes (a decompression bomb). The IHDR's CRC is recomputed, so only the sizes lie."""
    data = bytearray(png_bytes((1, 1)))
    ihdr = 8 + 4  # signature, then the chunk's length; the type "IHDR" and its data follow
    assert data[ihdr : ihdr + 4] == b"IHDR"
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


GOOD = png_bytes()
# (name, endpoint, multipart files, form fields, expected status, words the error must contain)
CASES = [
    ("not an image", "/v1/caption", {"image": ("a.png", b"hello, I am text", "image/png")}, {}, 415, "not an image"),
    ("truncated", "/v1/caption", {"image": ("a.png", GOOD[: len(GOOD) // 2], "image/png")}, {}, 400, "truncated"),
    ("empty file", "/v1/caption", {"image": ("a.png", b"", "image/png")}, {}, 400, "empty"),
    ("pixel cap", "/v1/caption", {"image": ("a.png", png_declaring(8000, 8000), "image/png")}, {}, 413,
     "64,000,000 pixels"),
    ("bomb", "/v1/caption", {"image": ("a.png", png_declaring(60000, 60000), "image/png")}, {}, 413, "pixels"),
    ("too large", "/v1/caption", {"image": ("a.png", GOOD + b"\0" * 70_000, "image/png")}, {}, 413,
     "--max-upload-mb"),
    ("no image", "/v1/vqa", None, {"question": "what?"}, 415, "multipart/form-data"),
    ("image as text", "/v1/vqa", {"question": (None, "what?")}, {"image": "abc"}, 400, "image"),
    ("empty question", "/v1/vqa", {"image": ("a.png", GOOD, "image/png")}, {"question": "   "}, 400, "question"),
    ("missing question", "/v1/vqa", {"image": ("a.png", GOOD, "image/png")}, {}, 400, "question"),
    ("long question", "/v1/vqa", {"image": ("a.png", GOOD, "image/png")}, {"question": "why " * 100}, 400,
     "at most 200"),
    ("unknown field", "/v1/caption", {"image": ("a.png", GOOD, "image/png")}, {"num_beam": "3"}, 400, "num_beam"),
    ("bad number", "/v1/caption", {"image": ("a.png", GOOD, "image/png")}, {"num_beams": "many"}, 400, "num_beams"),
    ("beams over cap", "/v1/caption", {"image": ("a.png", GOOD, "image/png")}, {"num_beams": "1000"}, 400,
     "--max-beams"),
    ("min over max", "/v1/caption", {"image": ("a.png", GOOD, "image/png")},
     {"min_new_tokens": "9", "max_new_tokens": "3"}, 400, "min_new_tokens"),
    ("vqa prompt without {}", "/v1/vqa", {"image": ("a.png", GOOD, "image/png")},
     {"question": "what?", "prompt": "Answer:"}, 400, "{}"),
    ("two images", "/v1/caption", [("image", ("a.png", GOOD, "image/png")), ("image", ("b.png", GOOD, "image/png"))],
     {}, 400, "Maximum number of files is 1"),
    ("not a classifier", "/v1/classify", {"image": ("a.png", GOOD, "image/png")}, {"labels": "a,b"}, 400,
     "not a model for classify"),
]


@pytest.fixture(scope="module")
def client(blip2_pipeline, tiny_blip2):
    with serving(blip2_pipeline, str(tiny_blip2), max_upload_mb=0.05, max_text_chars=200) as client:
        yield client


@pytest.mark.parametrize("name, endpoint, files, data, status, words", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_a_4xx_naming_the_problem(client, name, endpoint, files, data, status, words) -> None:
    response = client.post(endpoint, files=files, data=data) if files is not None else client.post(endpoint, data=data)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert words in error, error


def test_streamed_body_over_the_cap_is_413(client) -> None:
    """No Content-Length (chunked upload): the cap applies while the body is read."""
    def chunks():
        boundary = b"--cut\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        yield boundary
        for _ in range(20):
            yield b"\0" * 10_000

    response = client.post("/v1/caption", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=cut"})
    assert response.status_code == 413 and "--max-upload-mb" in response.json()["error"]


def test_bad_requests_leave_no_open_files(client) -> None:
    """Spooled uploads are closed whatever the error (file descriptors of this process, before and after)."""
    import os

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    for _ in range(3):
        for _, endpoint, files, data, status, _ in CASES:
            if files is not None:
                assert client.post(endpoint, files=files, data=data).status_code == status
    assert open_files() <= before + 2


def error_total(client) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith("mixkit_request_errors_total{"))


def test_json_errors_and_the_server_keeps_answering(client) -> None:
    errors_before = error_total(client)
    assert client.post("/v1/chat/completions", json={"messages": []}).json()["error"].endswith("serves caption, vqa")
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert client.get("/v1/caption").status_code == 405
    app = client.post("/v1/apps/text_guided_image_inpainting")
    assert app.status_code == 404 and "is not served here" in app.json()["error"]
    assert error_total(client) == errors_before + 4
    good = client.post("/v1/caption", files={"image": ("a.png", GOOD, "image/png")}, data=FAST)
    assert good.status_code == 200 and isinstance(good.json()["caption"], str)
    assert client.get("/health").json()["status"] == "ok"
