"""The OpenAI chat-completions format, read into mixkit's chat turns and written back.

Request (https://platform.openai.com/docs/api-reference/chat/create): `messages`, each `{"role", "content"}`
where content is a string or a list of parts `{"type": "text", "text"}` / `{"type": "image_url", "image_url":
{"url"}}`; `stream`; `max_tokens` (or its newer name `max_completion_tokens`). mixkit's chat models generate
with the checkpoint's beam-search settings, so sampling (`temperature` > 0, `top_p` < 1), `n` > 1, tools, stop
strings, logprobs and OpenAI's penalties are refused with a 400 rather than ignored; `num_beams`,
`min_new_tokens`, `length_penalty` and `repetition_penalty` (`mixkit chat`'s options) may be given as extra
keys. One image per conversation (the chat pipelines take one).

Response: `chat.completion` objects, or with `stream` server-sent events of `chat.completion.chunk` objects
ending with `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from mixkit.pipelines.chat import ChatTurn, check_turns
from mixkit.pipelines.options import ChatGenerationOptions, GenerationOptions
from mixkit.serve.config import ServeConfig
from mixkit.serve.inputs import RequestError, check_unknown, generation_options

MAX_MESSAGES = 64
# Accepted and without effect on a deterministic, single-model server.
IGNORED_KEYS = ("model", "user", "seed", "stream_options", "metadata", "store")
# Accepted at the value that means "what mixkit does anyway"; any other value is refused.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "temperature": (None, 0, 0.0), "top_p": (None, 1, 1.0), "n": (None, 1), "stop": (None, [], ""),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "logprobs": (None, False),
    "tools": (None, []), "tool_choice": (None, "none"), "response_format": (None, {"type": "text"}),
}
EXTRA_GENERATION_KEYS = ("num_beams", "min_new_tokens", "length_penalty", "repetition_penalty")
GENERATION_KEYS = ("max_tokens", "max_completion_tokens", *EXTRA_GENERATION_KEYS)
KNOWN_KEYS = ("messages", "stream", *GENERATION_KEYS, *IGNORED_KEYS, *NEUTRAL_VALUES)


@dataclass
class ChatRequest:
    turns: list[ChatTurn]
    image_url: str | None  # the conversation's one image, if any
    stream: bool
    options: GenerationOptions


def parse_chat_request(body: Any, config: ServeConfig) -> ChatRequest:
    """The conversation, its image and the generation options of a chat-completions body; RequestError
    (400) naming the key or message that is wrong."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object with a 'messages' list")
    check_unknown(list(body), KNOWN_KEYS, "chat request")
    for key, neutral in NEUTRAL_VALUES.items():
        if key in body and body[key] not in neutral:
            raise RequestError(400, f"{key}: {body[key]!r} is not supported (mixkit's chat models generate with "
                                    "the checkpoint's beam-search settings); leave it out")
    if not isinstance(body.get("stream", False), bool):
        raise RequestError(400, f"stream: expected true or false, got {body['stream']!r}")
    turns, images = parse_messages(body.get("messages"), config.max_text_chars)
    if len(images) > 1:
        raise RequestError(400, f"messages: {len(images)} images; this server's chat models take one image per "
                                "conversation")
    return ChatRequest(turns, images[0] if images else None, body.get("stream", False), chat_options(body, config))


def chat_options(body: dict, config: ServeConfig) -> GenerationOptions:
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise RequestError(400, "give max_tokens or max_completion_tokens, not both")
    fields = {key: body[key] for key in EXTRA_GENERATION_KEYS if key in body}
    fields["max_new_tokens"] = body.get("max_completion_tokens", body.get("max_tokens"))
    return generation_options(fields, config, ChatGenerationOptions)


def parse_messages(messages: Any, max_chars: int) -> tuple[list[ChatTurn], list[str]]:
    """(turns, image URLs in order)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: expected a non-empty list of {role, content} objects")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(400, f"messages: {len(messages)} messages; this server accepts at most {MAX_MESSAGES}")
    turns, images = [], []
    for number, message in enumerate(messages, start=1):
        where = f"messages[{number - 1}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, f"{where}: expected an object with 'role' and 'content'")
        role = message["role"]
        if role not in ("user", "assistant"):
            raise RequestError(400, f"{where}: role {role!r} is not supported; use user and assistant turns (the "
                                    "model applies its own system prompt)")
        text, urls = parse_content(message.get("content"), where)
        if urls and role != "user":
            raise RequestError(400, f"{where}: only user messages may hold images")
        if len(text) > max_chars:
            raise RequestError(400, f"{where}: {len(text)} characters; this server accepts at most {max_chars} "
                                    "per message (--max-text-chars)")
        turns.append(ChatTurn(role, text))
        images += urls
    try:
        check_turns(turns)
    except ValueError as error:
        raise RequestError(400, f"messages: {error}") from None
    return turns, images


def parse_content(content: Any, where: str) -> tuple[str, list[str]]:
    """A message's text (text parts joined by newlines) and its image URLs."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(400, f"{where}.content: expected a string or a list of parts")
    texts, urls = [], []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise RequestError(400, f"{where}.content[{index}]: image_url needs a 'url' string")
            urls.append(url)
        else:
            raise RequestError(400, f"{where}.content[{index}]: expected {{type: text, text}} or "
                                    "{type: image_url, image_url: {url}}")
    return "\n".join(texts), urls


# ---------------------------------------------------------------- responses


@dataclass(frozen=True)
class Completion:
    """Identity of one response, shared by all its chunks."""

    model: str
    id: str
    created: int

    @classmethod
    def new(cls, model: str) -> Completion:
        return cls(model, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))

    def message(self, text: str) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}]}

    def chunk(self, delta: dict, finish_reason: str | None = None) -> str:
        """One server-sent event."""
        data = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return sse(data)


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
