"""`mixkit predict chat` and `mixkit chat`: instructions to any chat pipeline (`mixkit.pipelines.chat` protocol).

Nothing here knows a family: the pipeline comes from `load_pipeline(model, task="chat")` and builds its own
prompts. Settings not given on the command line are the checkpoint's chat settings (`pipeline.chat_settings`: the
official code's defaults for a catalogue name, a `transformers` folder's `generation_config.json`).

`mixkit chat --model M --image A`: each line read from stdin is a user message; the response is streamed to
stdout as it is generated (word by word with greedy decoding; beam search hands over the finished response) and
the conversation is kept as history. `/reset` forgets the history, `/quit` or end of input ends. Prompts and
notes go to stderr, so stdout holds the responses only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any

from mixkit.apps.predict import USAGE_ERROR, load_images
from mixkit.apps.predict_config import ChatConfig, ChatPredictConfig, InputError
from mixkit.utils.typed_args import dataclass_from_args

RESET, QUIT = "/reset", "/quit"


def load_chat_pipeline(config: ChatPredictConfig | ChatConfig, paths: list[str]) -> tuple[Any, list, Any]:
    """Options checked and images decoded before the model loads; then the pipeline and the settings (the
    checkpoint's chat settings with the options on top)."""
    from mixkit.models.hub import resolve_checkpoint

    try:
        config.check()
    except ValueError as error:
        raise InputError(str(error)) from None
    images = load_images(paths)
    resolve_checkpoint(config.model)
    from mixkit.pipelines.auto import load_pipeline

    pipeline = load_pipeline(config.model, task="chat", device=config.device, fp32=config.fp32)
    try:
        return pipeline, images, config.apply(pipeline.chat_settings)
    except ValueError as error:
        raise InputError(str(error)) from None


def predict_chat(config: ChatPredictConfig) -> list[dict[str, str]]:
    """`{"image", "prompt", "response"}` per image: the response is the continuation only."""
    pipeline, images, settings = load_chat_pipeline(config, list(config.image))
    responses = []
    for start in range(0, len(images), config.batch_size):
        chunk = images[start : start + config.batch_size]
        responses += pipeline.respond(chunk, [config.prompt] * len(chunk), settings)
    return [{"image": path, "prompt": config.prompt, "response": text} for path, text in zip(config.image, responses)]


def chat_loop(pipeline: Any, image: Any, settings: Any, messages: Iterable[str],
              write: Callable[[str], None], note: Callable[[str], None]) -> list[Any]:
    """The conversation: each message gets a streamed response (`write` receives the pieces and a final "\\n");
    returns the turns so far. `note` receives prompts and notices (stderr in the command)."""
    from mixkit.pipelines.chat import ChatTurn

    turns: list[ChatTurn] = []
    for line in messages:
        message = line.strip()
        if message == QUIT:
            break
        if message == RESET:
            turns = []
            note("(history cleared)\n")
            continue
        if not message:
            continue
        asked = [*turns, ChatTurn("user", message)]
        response = pipeline.chat(image, asked, settings, on_text=write)
        write("\n")
        turns = [*asked, ChatTurn("assistant", response)]
    return turns


def _stdin_messages(first: str | None, note: Callable[[str], None]) -> Iterable[str]:
    if first is not None:
        yield first
    while True:
        note("you> ")
        line = sys.stdin.readline()
        if not line:
            return
        yield line


def _print(text: str, stream: Any) -> None:
    stream.write(text)
    stream.flush()


def run_chat(args: argparse.Namespace) -> int:
    """`mixkit chat`."""
    config = dataclass_from_args(ChatConfig, args)
    try:
        pipeline, images, settings = load_chat_pipeline(config, [config.image])
    except (InputError, FileNotFoundError, KeyError, ValueError) as error:
        print(f"mixkit chat: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    note = lambda text: _print(text, sys.stderr)  # noqa: E731
    note(f"chatting about {config.image} with {config.model} ({pipeline.family}); {RESET} forgets, {QUIT} ends\n")
    chat_loop(pipeline, images[0], settings, _stdin_messages(config.prompt, note),
              lambda text: _print(text, sys.stdout), note)
    return 0

