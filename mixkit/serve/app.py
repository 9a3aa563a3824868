"""The HTTP application: decode and check the request, queue it for the model, encode the answer.

`create_app(pipeline, config)` builds it around a loaded pipeline (`mixkit serve` loads one with
`load_pipeline`; tests pass tiny ones). Generation defaults are `mixkit predict`'s: the checkpoint's settings
with the request's options on top (`GenerationOptions.apply`). Every error is `{"error": message}` with a 4xx
(the request) or 5xx (the server) status; nothing a request sends stops the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Hashable, Mapping
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from mixkit.pipelines.options import DEFAULT_TEMPLATE, label_prompts
from mixkit.serve.apps import ServedApps, read_app_job
from mixkit.serve.batching import BatchWorker, QueueFull
from mixkit.serve.config import ServeConfig
from mixkit.serve.inputs import (GENERATION_FIELDS, RequestError, apply_options, check_text, check_unknown,
                                 decode_image_bytes, generation_options, load_image_url)
from mixkit.serve.metrics import CONTENT_TYPE, ServerMetrics
from mixkit.serve.middleware import BodyLimit, BodyTooLarge, RequestMetrics
from mixkit.serve.model import CaptionKey, ChatJob, ClassifyKey, RespondKey, ServedModel, VqaKey
from mixkit.serve.openai_chat import SSE_DONE, Completion, parse_chat_request, sse
from mixkit.serve.page import render_page

logger = logging.getLogger(__name__)
RETRY_AFTER_S = 1


class ServerState:
    """The model, its worker thread and the metrics: what every endpoint shares."""

    def __init__(self, pipeline: Any, config: ServeConfig, apps: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.model = ServedModel(pipeline, config.model_name)
        self.worker = BatchWorker(self.model.run_batch, config.max_batch_size, config.max_wait_ms / 1000,
                                  config.max_queue)
        self.apps = ServedApps(apps or {})
        self.app_worker = BatchWorker(self.apps.run_batch, 1, 0.0, config.max_queue)  # one app call at a time
        self.metrics = ServerMetrics(queue_depth=lambda: self.worker.depth + self.app_worker.depth)
        self.worker.on_batch = lambda size: self.metrics.batch_size.observe(size)

    def require(self, task: str) -> None:
        if task not in self.model.tasks:
            served = ", ".join(self.model.tasks) or "nothing"
            what = "a chat model" if task == "chat" else f"a model for {task}"
            raise RequestError(400, f"{self.model.name} ({self.model.family}) is not {what}; it serves {served}")

    def submit(self, key: Hashable, payload: Any, worker: BatchWorker | None = None) -> Future:
        try:
            return (worker or self.worker).submit(key, payload)
        except QueueFull as error:
            raise RequestError(503, f"busy: {error}; retry later", {"Retry-After": str(RETRY_AFTER_S)}) from None

    async def answer(self, key: Hashable, payload: Any) -> Any:
        return await wait_for_model(self.submit(key, payload))


async def wait_for_model(future: Future) -> Any:
    try:
        return await asyncio.wrap_future(future)
    except ValueError as error:  # a pipeline's own check of its input (e.g. a chat model that needs an image)
        raise RequestError(400, str(error)) from None
    except Exception as error:  # logged with its traceback by the worker; the client gets no internals
        raise RequestError(500, f"the model failed on this request ({type(error).__name__}); see the server log")


# ---------------------------------------------------------------- reading requests


async def open_form(request: Request, max_files: int, max_fields: int, urlencoded: bool = False) -> FormData:
    """The multipart form (or, when `urlencoded`, a form without files too), parsed (close it when done);
    415 / 413 / 400 for what is not a good one."""
    content_type = request.headers.get("content-type", "")
    kinds = ("multipart/form-data", "application/x-www-form-urlencoded") if urlencoded else ("multipart/form-data",)
    if not content_type.startswith(kinds):
        raise RequestError(415, "send multipart/form-data with the image as the file field 'image'")
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except BodyTooLarge as error:
        raise RequestError(413, str(error)) from None
    except (MultiPartException, StarletteHTTPException) as error:
        detail = error.detail if isinstance(error, StarletteHTTPException) else error.message
        raise RequestError(400, f"multipart form: {detail}") from None


async def read_form(request: Request, fields: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
    """The uploaded `image` bytes and the text fields of a multipart form (only `fields` are allowed)."""
    form = await open_form(request, max_files=1, max_fields=len(fields) + 1)
    try:
        return await form_contents(form, fields)
    finally:
        await form.close()


async def form_contents(form: FormData, fields: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
    check_unknown(list(form.keys()), ("image", *fields), "form")
    images = form.getlist("image")
    if not images:
        raise RequestError(400, "image: missing (send the image as the file field 'image')")
    if len(images) > 1 or not isinstance(images[0], UploadFile):
        raise RequestError(400, "image: send exactly one image, as a file")
    texts = {}
    for name in fields:
        value = form.get(name)
        if isinstance(value, UploadFile):
            raise RequestError(400, f"{name}: expected a text field, got a file")
        if value is not None:
            texts[name] = value
    return await images[0].read(), texts


async def read_json(request: Request) -> Any:
    try:
        return await request.json()
    except BodyTooLarge as error:
        raise RequestError(413, str(error)) from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(400, f"the body is not valid JSON: {error}") from None


async def decode_upload(data: bytes, config: ServeConfig) -> Any:
    return await run_in_threadpool(decode_image_bytes, data, "image", config.max_image_pixels)


# ---------------------------------------------------------------- the application


def create_app(pipeline: Any, config: ServeConfig, apps: Mapping[str, Any] | None = None) -> FastAPI:
    """The server; `apps` are the AppFlow apps it answers at /v1/apps/{app} (`Appflow` objects by name)."""
    state = ServerState(pipeline, config, apps)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.worker.start()
        state.app_worker.start()
        yield
        await run_in_threadpool(state.worker.stop)  # uvicorn has let the requests in flight finish
        await run_in_threadpool(state.app_worker.stop)

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and this server must work offline.
    app = FastAPI(title="mixkit", description=f"Serving {config.model_name}", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.mixkit = state
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    app.add_middleware(RequestMetrics, metrics=state.metrics)  # outermost: counts the 413s above too
    add_error_handlers(app)
    add_info_routes(app, state)
    add_task_routes(app, state)
    add_chat_route(app, state)
    add_app_route(app, state)
    return app


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:  # 404, 405
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


def add_info_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": state.model.name, "family": state.model.family, "tasks": state.model.tasks,
                "apps": state.apps.names, "max_batch_size": state.config.max_batch_size, "queue_depth": state.worker.depth}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(state.model.name, state.model.tasks, state.apps.describe()))


def add_task_routes(app: FastAPI, state: ServerState) -> None:
    config = state.config
    pipeline = state.model.pipeline

    @app.post("/v1/caption")
    async def caption(request: Request) -> dict:
        state.require("caption")
        data, fields = await read_form(request, GENERATION_FIELDS)
        options = generation_options(fields, config)
        settings = apply_options(options, pipeline.settings.caption)
        image = await decode_upload(data, config)
        return {"caption": await state.answer(CaptionKey(options.prompt, settings), image)}

    @app.post("/v1/vqa")
    async def vqa(request: Request) -> dict:
        state.require("vqa")
        data, fields = await read_form(request, ("question", *GENERATION_FIELDS))
        question = check_text(fields.get("question"), "question", config.max_text_chars)
        options = generation_options(fields, config)
        if options.prompt is not None and "{}" not in options.prompt:
            raise RequestError(400, f"prompt: a VQA prompt is a template with {{}} for the question, got "
                                    f"{options.prompt!r}")
        settings = apply_options(options, pipeline.settings.vqa)
        image = await decode_upload(data, config)
        return {"answer": await state.answer(VqaKey(options.prompt, settings), (image, question))}

    @app.post("/v1/classify")
    async def classify(request: Request) -> dict:
        state.require("classify")
        data, fields = await read_form(request, ("labels", "template"))
        text = check_text(fields.get("labels"), "labels", config.max_text_chars)
        template = check_text(fields.get("template"), "template", config.max_text_chars, required=False)
        labels = tuple(label.strip() for label in text.split(","))
        template = template or DEFAULT_TEMPLATE
        try:
            label_prompts(labels, template)
        except ValueError as error:
            raise RequestError(400, str(error).removeprefix("--")) from None
        image = await decode_upload(data, config)
        return {"labels": list(labels), "probs": await state.answer(ClassifyKey(labels, template), image)}


def add_app_route(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/apps/{app_name}")
    async def run_app(app_name: str, request: Request) -> dict:
        """What `mixkit app run APP --json` prints, media inline as data URIs (see `mixkit.serve.apps`)."""
        spec = state.apps.spec(app_name)
        form = await open_form(request, max_files=2, max_fields=len(spec.inputs) + len(spec.params) + 1,
                               urlencoded=True)  # an app without file inputs may send a plain form
        try:
            job = await read_app_job(form, spec, state.config)
        finally:
            await form.close()
        return await wait_for_model(state.submit(app_name, job, state.app_worker))


def add_chat_route(app: FastAPI, state: ServerState) -> None:
    config = state.config

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        state.require("chat")
        parsed = parse_chat_request(await read_json(request), config)
        settings = apply_options(parsed.options, state.model.pipeline.chat_settings)
        image = None
        if parsed.image_url is not None:
            image = await run_in_threadpool(load_image_url, parsed.image_url, config, "image_url")
        completion = Completion.new(state.model.name)
        if not parsed.stream and len(parsed.turns) == 1 and image is not None:  # batched, as `predict chat`
            return completion.message(await state.answer(RespondKey(settings), (image, parsed.turns[0].text)))
        key = state.model.chat_key(settings)
        job = ChatJob(image, parsed.turns, on_text=None)
        if not parsed.stream:
            return completion.message(await state.answer(key, job))
        return stream_chat(state, key, job, completion)


def stream_chat(state: ServerState, key: Hashable, job: ChatJob, completion: Completion) -> StreamingResponse:
    """Server-sent events: the role, each text piece as the model produces it, the end, `[DONE]`. The job is
    queued before the response starts, so a full queue is still a 503."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    end = object()
    job.on_text = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
    future = state.submit(key, job)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, end))

    async def events() -> AsyncIterator[str]:
        yield completion.chunk({"role": "assistant", "content": ""})
        while (piece := await pieces.get()) is not end:
            yield completion.chunk({"content": piece})
        try:
            await wait_for_model(future)
        except RequestError as error:  # the status line is sent already: report in the stream
            yield sse({"error": {"message": error.message}})
            return
        yield completion.chunk({}, finish_reason="stop")
        yield SSE_DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
