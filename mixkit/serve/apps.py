"""AppFlow apps over HTTP: `POST /v1/apps/{app}` runs an app the server loaded at start-up (`--app`,
`--app-models`) and answers the JSON that `mixkit app run --json` prints, its media inline as `data:` URIs.

A request is a multipart form: `image` (a file) for the apps that read one (`audio`, a WAV file, for the audio
apps), `prompt`, the app's other text inputs and its parameters, each under the app's own name and typed as
`mixkit app run` types them (`convert_value`). The uploads are written into a temporary folder and the app runs on
those paths, exactly as `mixkit app run --image PATH` runs it, so the answers are the same; `write_outputs` then
writes the media there and every file path in its record becomes a data URI (PNG, GIF or WAV; `files` is left
out). The input keys (`image`, `audio`) hold the uploaded file's name. The folder is gone before the answer leaves.

Apps run one request at a time on their own worker thread (detection and diffusion are not batched), behind a
bounded queue: a full queue is a 503, as for the model.
"""

from __future__ import annotations

import base64
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from mixkit.apps.appflow.models import choose_models
from mixkit.apps.appflow.options import AppUsageError, convert_value
from mixkit.apps.appflow.registry import get_app
from mixkit.apps.appflow.spec import AppSpec
from mixkit.serve.config import ServeConfig
from mixkit.serve.inputs import RequestError, check_text, check_unknown, decode_image_bytes

UPLOADS = ("image", "audio")  # app inputs sent as files; every other input is text
MEDIA_TYPES = {".png": "image/png", ".gif": "image/gif", ".wav": "audio/wav"}  # what `write_media` writes


# ---------------------------------------------------------------- loading (at start-up)


def fills_a_stage(spec: AppSpec, model: str) -> bool:
    try:
        choose_models(spec, [model])
    except ValueError:
        return False
    return True


def allot_models(specs: Sequence[AppSpec], models: Sequence[str]) -> dict[str, list[str]]:
    """The `--app-models` each app takes (those that fill one of its stages); one that no app takes is an error."""
    allotted = {spec.name: [model for model in models if fills_a_stage(spec, model)] for spec in specs}
    unused = [model for model in models if not any(model in taken for taken in allotted.values())]
    if unused:
        raise ValueError(f"--app-models: {', '.join(unused)} fills no stage of --app {' '.join(allotted)} "
                         "(`mixkit app list` shows each app's models)")
    return allotted


def load_apps(names: Sequence[str], models: Sequence[str] | None, device: str | None) -> dict[str, Any]:
    """An `Appflow` per app name, its models loaded (unknown names and missing models fail here, at start-up)."""
    from mixkit.apps.appflow.flow import Appflow

    specs = [get_app(name) for name in dict.fromkeys(names)]
    allotted = allot_models(specs, models or [])
    return {spec.name: Appflow(app=spec.name, models=allotted[spec.name] or None, device=device) for spec in specs}


# ---------------------------------------------------------------- reading a request


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass
class AppJob:
    """One request: the text inputs, the typed parameters and the uploaded files, by the app's key names."""

    texts: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)


def form_keys(spec: AppSpec) -> tuple[list[str], list[str]]:
    """(file fields, text fields) an app's form takes."""
    files = [key for key in spec.inputs if key in UPLOADS]
    texts = [key for key in spec.inputs if key not in UPLOADS] + [key for key in spec.params if key not in UPLOADS]
    return files, texts


def typed_param(key: str, text: str, default: Any, config: ServeConfig) -> Any:
    """A parameter as `mixkit app run --KEY TEXT` types it (the app's default's type); 400 naming it."""
    check_text(text, key, config.max_text_chars)
    try:
        value = int(text) if key == "seed" else convert_value(key, text, default)
    except (AppUsageError, ValueError) as error:
        message = str(error).removeprefix("--") if isinstance(error, AppUsageError) else f"{key}: {error}"
        raise RequestError(400, message) from None
    limits = {"max_new_tokens": (config.max_tokens, "--max-tokens"),  # generated images within the pixel cap too
              "height": (math.isqrt(config.max_image_pixels), "--max-image-pixels"),
              "width": (math.isqrt(config.max_image_pixels), "--max-image-pixels")}
    if key in limits and not (isinstance(value, int) and 1 <= value <= limits[key][0]):
        high, option = limits[key]
        raise RequestError(400, f"{key}: must be a whole number in [1, {high}] on this server ({option}), got {value!r}")
    return value


async def _one_file(form: FormData, key: str) -> Upload | None:
    values = form.getlist(key)
    if not values:
        return None
    if len(values) > 1 or not isinstance(values[0], UploadFile):
        raise RequestError(400, f"{key}: send exactly one file as the file field {key!r}")
    return Upload(values[0].filename or key, await values[0].read())


def _one_text(form: FormData, key: str) -> str | None:
    values = form.getlist(key)
    if not values:
        return None
    if len(values) > 1 or isinstance(values[0], UploadFile):
        raise RequestError(400, f"{key}: expected one text field")
    return values[0]


async def read_app_job(form: FormData, spec: AppSpec, config: ServeConfig) -> AppJob:
    """The request's inputs and parameters, checked (unknown fields, types, lengths, the image's size and format);
    inputs the app needs but the request lacks are reported by the app's steps (400)."""
    file_keys, text_keys = form_keys(spec)
    check_unknown(list(form.keys()), (*file_keys, *text_keys), f"app {spec.name}")
    job = AppJob()
    for key in file_keys:
        upload = await _one_file(form, key)
        if upload is not None:
            job.uploads[key] = upload
    for key in text_keys:
        text = _one_text(form, key)
        if text is None:
            continue
        if key in spec.params:
            job.params[key] = typed_param(key, text, spec.params[key], config)
        else:
            job.texts[key] = check_text(text, key, config.max_text_chars)
    if "image" in job.uploads:  # decoded here only to be checked (pixels, format, truncation); the app reads the file
        await run_in_threadpool(decode_image_bytes, job.uploads["image"].data, "image", config.max_image_pixels)
    return job


# ---------------------------------------------------------------- running (on the apps' worker thread)


def data_uri(path: Path) -> str:
    media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return f"data:{media_type};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def inline_files(value: Any, files: set[str]) -> Any:
    """`value` with every path of a written file replaced by the file as a data URI."""
    if isinstance(value, str) and value in files:
        return data_uri(Path(value))
    if isinstance(value, list):
        return [inline_files(item, files) for item in value]
    return value


def save_uploads(uploads: Mapping[str, Upload], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, upload in uploads.items():
        paths[key] = folder / key
        paths[key].write_bytes(upload.data)
    return paths


def _hide_paths(message: str, paths: Mapping[str, Path], uploads: Mapping[str, Upload]) -> str:
    """An app's error with the server's temporary paths replaced by the uploaded files' names."""
    for key, path in paths.items():
        message = message.replace(str(path), uploads[key].filename)
    return message


def run_in_folder(flow: Any, job: AppJob, folder: Path) -> dict[str, Any]:
    from mixkit.apps.appflow.outputs import write_outputs

    paths = save_uploads(job.uploads, folder / "inputs")
    try:
        state = flow(**job.texts, **{key: str(path) for key, path in paths.items()}, **job.params)
    except ValueError as error:  # StepInputError and the libraries' own checks: the client's input (400)
        raise ValueError(_hide_paths(str(error), paths, job.uploads)) from None
    record = write_outputs(state, folder / "outputs")
    files = set(record.pop("files"))
    record = {key: inline_files(value, files) for key, value in record.items()}
    record.update({key: upload.filename for key, upload in job.uploads.items()})
    return record


class ServedApps:
    """The apps this server loaded, by name."""

    def __init__(self, flows: Mapping[str, Any]) -> None:
        self.flows = dict(flows)

    @property
    def names(self) -> list[str]:
        return list(self.flows)

    def spec(self, name: str) -> AppSpec:
        """The app's spec; 404 for an app this server did not load."""
        if name not in self.flows:
            served = ", ".join(self.flows) or "none (start it with --app APP)"
            raise RequestError(404, f"app {name!r} is not served here; this server's apps: {served}")
        return self.flows[name].spec

    def describe(self) -> dict[str, dict[str, Any]]:
        """What the web page needs to build each app's form."""
        return {name: {"inputs": list(flow.spec.inputs), "params": dict(flow.spec.params),
                       "description": flow.spec.description} for name, flow in self.flows.items()}

    def run(self, name: str, job: AppJob) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="mixkit-app-") as folder:
            return run_in_folder(self.flows[name], job, Path(folder))

    def run_batch(self, name: str, jobs: Iterable[AppJob]) -> list[dict[str, Any]]:
        return [self.run(name, job) for job in jobs]
