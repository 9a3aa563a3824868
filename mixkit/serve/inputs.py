"""Decoding and checking what a request sends, before anything reaches the model.

Every problem is a `RequestError` with an HTTP status and a message naming the field: the server answers
`{"error": message}` and goes on serving. Images are checked for size before they are decoded (a small PNG can
declare gigapixels: a decompression bomb), then decoded in full by the loader the rest of mixkit uses.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

from PIL import Image

from mixkit.data.transforms import ImageLoadError, decode_image
from mixkit.models.settings import GenerationSettings
from mixkit.pipelines.options import GenerationOptions
from mixkit.serve.config import ServeConfig

GENERATION_FIELDS = ("prompt", "num_beams", "max_new_tokens", "min_new_tokens", "length_penalty")
NUMBER_FIELDS = {"num_beams": int, "max_new_tokens": int, "min_new_tokens": int, "length_penalty": float,
                 "repetition_penalty": float}
URL_TIMEOUT_S = 10.0


class RequestError(Exception):
    """Bad input: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def check_pixels(image: Image.Image, where: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise RequestError(413, f"{where}: the image is {width}x{height} = {width * height:,} pixels; this server "
                                f"accepts at most {max_pixels:,} (--max-image-pixels)")


def decode_image_bytes(data: bytes, where: str, max_pixels: int) -> Image.Image:
    """An RGB image from uploaded bytes: 400 for empty or undecodable data (truncated files too), 415 for data
    that is no image, 413 for too many pixels (checked from the header, before decoding)."""
    if not data:
        raise RequestError(400, f"{where}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            check_pixels(header, where, max_pixels)
    except Image.UnidentifiedImageError:
        raise RequestError(415, f"{where}: not an image in a format this server reads (PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError:  # PIL's own limit, far above ours unless --max-image-pixels is huge
        raise RequestError(413, f"{where}: the image has too many pixels (decompression bomb)") from None
    except OSError as error:
        raise RequestError(400, f"{where}: cannot read the image header: {error}") from None
    try:
        return decode_image(io.BytesIO(data), where)
    except ImageLoadError as error:
        raise RequestError(400, f"{where}: the image cannot be decoded ({error.reason})") from None


def check_text(value: str | None, field: str, max_chars: int, required: bool = True) -> str | None:
    """The text as given; 400 when required and missing or blank, or longer than `max_chars`."""
    if value is None or not value.strip():
        if required:
            raise RequestError(400, f"{field}: missing or empty")
        return value
    if len(value) > max_chars:
        raise RequestError(400, f"{field}: {len(value)} characters; this server accepts at most {max_chars} "
                                "(--max-text-chars)")
    return value


def _number(fields: Mapping[str, object], name: str, kind: type) -> int | float | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        raise RequestError(400, f"{name}: expected {kind.__name__}, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise RequestError(400, f"{name}: expected {kind.__name__}, got {value!r}") from None


def generation_options(fields: Mapping[str, object], config: ServeConfig,
                       options_type: type[GenerationOptions] = GenerationOptions) -> GenerationOptions:
    """The request's generation options (form fields or JSON keys of the same names), within the server's
    limits; fields not given are None, i.e. the checkpoint's own settings, as in `mixkit predict`.
    `ChatGenerationOptions` adds `repetition_penalty`."""
    prompt = fields.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise RequestError(400, f"prompt: expected text, got {prompt!r}")
    check_text(prompt, "prompt", config.max_text_chars, required=False)
    numbers = {name: _number(fields, name, kind) for name, kind in NUMBER_FIELDS.items()
               if name in options_type.__dataclass_fields__}
    options = options_type(prompt=prompt, **numbers)
    limits = {"num_beams": (1, config.max_beams, "--max-beams"),
              "max_new_tokens": (1, config.max_tokens, "--max-tokens"),
              "min_new_tokens": (0, config.max_tokens, "--max-tokens")}
    for name, (low, high, option) in limits.items():
        value = getattr(options, name)
        if value is not None and not low <= value <= high:
            raise RequestError(400, f"{name}: must lie in [{low}, {high}] on this server ({option}), got {value}")
    if numbers.get("repetition_penalty") is not None and numbers["repetition_penalty"] <= 0:
        raise RequestError(400, f"repetition_penalty: must be > 0, got {numbers['repetition_penalty']}")
    return options


def apply_options(options: GenerationOptions, base: GenerationSettings) -> GenerationSettings:
    """`mixkit predict`'s rule: the checkpoint's settings with the request's options on top."""
    try:
        return options.apply(base)
    except ValueError as error:
        raise RequestError(400, f"generation options: {error}") from None


def check_unknown(fields: Sequence[str], known: Sequence[str], where: str) -> None:
    """400 naming a field the endpoint does not take (a typo would otherwise be ignored silently)."""
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise RequestError(400, f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")


# ---------------------------------------------------------------- image URLs (chat)


def decode_data_uri(url: str, where: str) -> bytes:
    """The bytes of a base64 `data:` URI (`data:image/png;base64,...`)."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise RequestError(400, f"{where}: a data URI must look like data:image/png;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where}: the data URI's base64 is invalid") from None


class _AllowListRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another allowed host."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        check_remote_url(newurl, self.allowed, "redirect")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def check_remote_url(url: str, allowed: Sequence[str], where: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise RequestError(400, f"{where}: image URLs must be data: URIs (or http(s) from allowed hosts)")
    if parsed.hostname not in allowed:
        raise RequestError(400, f"{where}: remote image URLs are refused (host {parsed.hostname!r} is not allowed; "
                                "start the server with --allow-image-host HOST, or send a data: URI)")


def fetch_image_url(url: str, allowed: Sequence[str], max_bytes: int, where: str) -> bytes:
    """The bytes behind an http(s) URL on an allowed host, at most `max_bytes` (blocking: run in a thread)."""
    check_remote_url(url, allowed, where)
    opener = urllib.request.build_opener(_AllowListRedirects(allowed))
    try:
        with opener.open(url, timeout=URL_TIMEOUT_S) as response:
            data = response.read(max_bytes + 1)
    except RequestError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise RequestError(400, f"{where}: cannot fetch {url}: {error}") from None
    if len(data) > max_bytes:
        raise RequestError(413, f"{where}: the image at {url} is larger than {max_bytes:,} bytes (--max-upload-mb)")
    return data


def load_image_url(url: str, config: ServeConfig, where: str) -> Image.Image:
    """A chat request's image: a data URI, or a URL on an allowed host (blocking: run in a thread)."""
    if url.startswith("data:"):
        data = decode_data_uri(url, where)
    else:
        data = fetch_image_url(url, config.allow_image_host, config.max_upload_bytes, where)
    return decode_image_bytes(data, where, config.max_image_pixels)
