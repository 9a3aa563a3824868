"""`mixkit serve` as a real process: the web page driven in Chromium (Playwright), a VQA model and an AppFlow app
(`--app`), and SIGTERM letting the requests in flight finish. One server for the module; the SIGTERM test, last,
ends it.

Chromium is Debian's (`apt-get install chromium`), driven through Playwright's `executable_path` (no
`playwright install`). Without it the browser test is skipped locally and fails in CI (`CI=true`).
"""

from __future__ import annotations

import base64
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.apps.appflow_models import vision_models  # noqa: F401  (a session fixture)
from tests.serve.conftest import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "what color is the circle?"
SECOND_QUESTION = "is there a square on the left?"


@pytest.fixture(scope="module")
def live(tiny_blip2: Path, vision_models):  # noqa: F811
    # The batch window is long so that the SIGTERM test can catch requests waiting in it.
    server = LiveServer(tiny_blip2, "--max-wait-ms", "1500", "--name", "tiny-blip2-opt", "--app", "openset_det_sam",
                        "--app-models", str(vision_models.grounding_dino), str(vision_models.sam))
    yield server
    server.stop()


def require_browser():
    """Playwright's sync API, or a skip (a failure in CI) saying what is missing."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is not installed (pip install 'mixkit[test]')"
    if problem is None and not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem is None:
        return sync_playwright
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test: {problem}; CI must run it")
    pytest.skip(f"browser test: {problem}")


def wait_for_result(page, runs: int) -> str:
    """The result text once the page has finished its `runs`-th request (it counts them in body[data-runs])."""
    page.wait_for_function(f"+document.body.dataset.runs >= {runs}", timeout=120_000)
    error = page.text_content("#error")
    assert not error, error
    return page.evaluate("document.getElementById('result').textContent")


def test_page_in_chromium(live: LiveServer, image_files: list[Path], tmp_path: Path) -> None:
    sync_playwright = require_browser()
    image = image_files[0]
    expected = [httpx.post(f"{live.url}/v1/vqa", files={"image": image.read_bytes()}, data={"question": question},
                           timeout=120).json()["answer"] for question in (QUESTION, SECOND_QUESTION)]
    detection = httpx.post(f"{live.url}/v1/apps/openset_det_sam", files={"image": image.read_bytes()},
                           data={"prompt": "Circle", "box_threshold": "0.2"}, timeout=120).json()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 620})
            page.goto(live.url)
            assert page.eval_on_selector_all("#task option", "options => options.map(o => o.value)") == [
                "caption", "vqa", "openset_det_sam"]
            # Upload through the file chooser, ask a question.
            page.set_input_files("#file", str(image))
            page.select_option("#task", "vqa")
            page.fill("#question", QUESTION)
            page.click("#run")
            assert wait_for_result(page, 1) == expected[0]
            # Drop the same image on the drop zone, ask another question.
            page.evaluate("""data => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
                document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer }));
            }""", base64.b64encode(image.read_bytes()).decode())
            assert page.get_attribute("#drop img", "alt") == "dropped.png"
            page.fill("#question", SECOND_QUESTION)
            page.click("#run")
            assert wait_for_result(page, 2) == expected[1]
            # The app: its form has its prompt and parameters; the answer shows its drawn picture and labels.
            page.select_option("#task", "openset_det_sam")
            page.fill("#app-prompt", "Circle")
            page.fill("#app-box_threshold", "0.2")
            page.click("#run")
            labels = [f"{label}  {score:.3f}" for label, score in zip(detection["labels"], detection["scores"])]
            assert wait_for_result(page, 3) == "\n".join(["prompt: Circle", *labels])
            assert page.get_attribute("#media img", "src") == detection["picture"]
            screenshot = tmp_path / "serve.png"
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def in_flight(url: str) -> float:
    """Requests being answered, this one included."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("mixkit_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no mixkit_requests_in_flight metric")


def test_sigterm_finishes_requests_in_flight(live: LiveServer, image_files: list[Path]) -> None:
    def ask(image: Path) -> httpx.Response:
        return httpx.post(f"{live.url}/v1/vqa", files={"image": image.read_bytes()},
                          data={"question": QUESTION, "num_beams": "1", "max_new_tokens": "3"}, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        responses = [pool.submit(ask, image) for image in image_files]
        deadline = time.monotonic() + 60
        while in_flight(live.url) < len(image_files) + 1:  # they wait in the 1.5 s batch window
            assert time.monotonic() < deadline, "the requests never arrived"
            time.sleep(0.02)
        live.process.send_signal(signal.SIGTERM)
        answers = [future.result() for future in responses]
    assert [response.status_code for response in answers] == [200] * len(image_files)
    assert all(isinstance(response.json()["answer"], str) for response in answers)
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status reports SIGTERM.
    assert live.process.wait(60) in (0, -signal.SIGTERM), live.log
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{live.url}/health")
    assert "Shutting down" in live.log and "Finished server process" in live.log
