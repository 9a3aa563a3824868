"""What every chat pipeline offers (InstructBLIP, MiniGPT-4, MiniGPT-v2, ...), so commands and the server
need not know the family.

A conversation is a list of `ChatTurn`s, user and assistant alternating, the last one the user's. Each family
builds its own prompt from the turns (its official template and stop rules); the pipeline returns only the
continuation, as LAVIS and the official demos return it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # keeps this module free of torch / PIL imports
    from mixkit.models.settings import GenerationSettings
    from mixkit.pipelines.common import ImageInput

ROLES = ("user", "assistant")


@dataclass(frozen=True)
class ChatTurn:
    role: str  # "user" or "assistant"
    text: str


def check_turns(turns: Sequence[ChatTurn]) -> None:
    """ValueError naming the turn: unknown roles, roles that do not alternate from the user's, a conversation
    that does not end with the user's turn, or an empty user message."""
    if not turns:
        raise ValueError("the conversation is empty: give at least one user message")
    for index, turn in enumerate(turns):
        if turn.role not in ROLES:
            raise ValueError(f"turn {index + 1}: role {turn.role!r} is not one of {ROLES}")
        expected = ROLES[index % 2]
        if turn.role != expected:
            raise ValueError(f"turn {index + 1}: expected a {expected} turn (user and assistant alternate, "
                             f"starting with the user), got {turn.role}")
        if turn.role == "user" and not turn.text.strip():
            raise ValueError(f"turn {index + 1}: the user message is empty")
    if turns[-1].role != "user":
        raise ValueError("the conversation must end with a user message")


@runtime_checkable
class ChatPipeline(Protocol):
    """The chat interface. `settings=None` means the checkpoint's own chat settings (`chat_settings`)."""

    family: str

    @property
    def chat_settings(self) -> GenerationSettings:
        """The checkpoint's default chat generation settings (catalogue entry, the folder's
        `generation_config.json`, or the family reference)."""
        ...

    def respond(self, images: Sequence[ImageInput], prompts: Sequence[str],
                settings: GenerationSettings | None = None) -> list[str]:
        """Single-turn and batched: one response per (image, prompt) row, each image encoded once."""
        ...

    def chat(self, image: ImageInput | None, turns: Sequence[ChatTurn], settings: GenerationSettings | None = None,
             on_text: Callable[[str], None] | None = None) -> str:
        """One multi-turn step: the response to the last user turn given the history; `on_text` receives
        the response's text pieces as they are generated (streaming)."""
        ...
