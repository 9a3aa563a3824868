"""The typed options of `mixkit serve`, apart from the server that uses them.

This module imports no torch, PIL, FastAPI or `transformers`, so building the `mixkit` parser stays fast;
`mixkit.serve.server` loads the model and starts uvicorn when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mixkit.pipelines.options import ModelOptions

MIB = 1024 * 1024


@dataclass(kw_only=True)
class ServeConfig(ModelOptions):
    task: str | None = field(default=None, metadata={
        "help": "which of the checkpoint's pipelines to load (default: its first task, as `load_pipeline` picks "
                "it); the endpoints follow from what that pipeline does"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (default 127.0.0.1)"})
    port: int = field(default=8000, metadata={"help": "TCP port (default 8000)"})
    max_batch_size: int = field(default=8, metadata={
        "help": "most requests answered by one model call (default 8; 1 turns batching off)"})
    max_wait_ms: float = field(default=10.0, metadata={
        "help": "how long the first request of a batch waits for others to join it (default 10 ms)"})
    max_queue: int = field(default=64, metadata={
        "help": "requests that may wait for the model; more are answered 503 with Retry-After (default 64)"})
    max_upload_mb: float = field(default=10.0, metadata={
        "help": "largest request body in MiB, image included (default 10); larger ones get 413"})
    max_image_pixels: int = field(default=36_000_000, metadata={
        "help": "largest image, width x height, checked before decoding (default 36 million: decompression "
                "bombs are refused)"})
    max_text_chars: int = field(default=2000, metadata={
        "help": "longest question, prompt, label list or chat message in characters (default 2000)"})
    max_beams: int = field(default=10, metadata={"help": "largest num_beams a request may ask for (default 10)"})
    max_tokens: int = field(default=512, metadata={
        "help": "largest max_new_tokens a request may ask for (default 512)"})
    allow_image_host: list[str] = field(default_factory=list, metadata={
        "help": "hosts whose http(s) image URLs chat requests may use (default: none; data: URIs only)",
        "metavar": "HOST"})
    app: list[str] = field(default_factory=list, metadata={
        "help": "AppFlow apps to serve at POST /v1/apps/APP (see `mixkit app list`; default: none)",
        "metavar": "APP"})
    app_models: list[str] | None = field(default=None, metadata={
        "help": "the apps' models, by name or local folder, as `mixkit app run --models` takes them; each app "
                "takes those that fill one of its stages, its defaults for the rest", "metavar": "MODEL"})
    name: str | None = field(default=None, metadata={
        "help": "the model name reported in responses (default: the --model value)"})
    shutdown_timeout: float = field(default=60.0, metadata={
        "help": "on SIGTERM, seconds to let requests in flight finish before closing (default 60)"})
    log_level: str = field(default="info", metadata={
        "help": "uvicorn's log level (default info)", "choices": ["critical", "error", "warning", "info", "debug"]})

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def model_name(self) -> str:
        return self.name or self.model

    def check(self) -> None:
        """ValueError naming the option for a value outside its range."""
        for name in ("max_batch_size", "max_queue", "max_image_pixels", "max_text_chars", "max_beams", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_wait_ms", "shutdown_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(self, name)}")
        if self.max_upload_mb <= 0:
            raise ValueError(f"--max-upload-mb: must be > 0, got {self.max_upload_mb}")
        if self.app_models and not self.app:
            raise ValueError("--app-models: name the apps they are for with --app APP")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port: must lie in [0, 65535], got {self.port}")
