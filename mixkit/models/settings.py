"""How a checkpoint generates text besides its weights: prompts and beam-search settings, as plain data.

`GenerationSettings` are in `transformers` >= 4.38 terms (new tokens only). `PredictionSettings` bundles the
caption prompt, the VQA prompt template and one `GenerationSettings` per task; the catalogue gives one to
every generative entry, and mixkit writes it beside trained checkpoints as `mixkit_settings.json`. Which one
applies to a checkpoint is decided in one place: `mixkit.pipelines.settings.resolve_prediction_settings`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

SETTINGS_NAME = "mixkit_settings.json"


@dataclass(frozen=True)
class GenerationSettings:
    """Beam-search settings in ``transformers`` >= 4.38 terms (new tokens only)."""

    num_beams: int
    max_new_tokens: int
    min_new_tokens: int
    length_penalty: float
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ValueError(f"num_beams and max_new_tokens must be >= 1: {self}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must lie in [0, max_new_tokens]: {self}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0: {self}")

    def with_overrides(self, num_beams: int | None = None, max_new_tokens: int | None = None,
                       min_new_tokens: int | None = None, length_penalty: float | None = None,
                       repetition_penalty: float | None = None) -> GenerationSettings:
        """These settings with the user's choices on top (None = keep). A max below this minimum lowers the
        minimum with it instead of failing. Raises ValueError for impossible settings."""
        changes = {name: value for name, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens),
                   ("min_new_tokens", min_new_tokens), ("length_penalty", length_penalty),
                   ("repetition_penalty", repetition_penalty)) if value is not None}
        if min_new_tokens is None and max_new_tokens is not None:
            changes["min_new_tokens"] = min(self.min_new_tokens, max_new_tokens)
        return replace(self, **changes)

    def generate_kwargs(self) -> dict[str, float | int]:
        """Keyword arguments of `generate` (a zero minimum is left out, as `transformers` expects)."""
        kwargs = asdict(self)
        if kwargs["min_new_tokens"] == 0:
            del kwargs["min_new_tokens"]
        return kwargs


@dataclass(frozen=True)
class PredictionSettings:
    """What a generative checkpoint needs besides weights to caption and answer like its reference."""

    prompt: str  # the text a caption continues ("" for none)
    vqa_prompt: str  # a template with {} for the cleaned question
    caption: GenerationSettings
    vqa: GenerationSettings
    # Free-form instructions (`mixkit predict chat`, `mixkit chat`); None for families that do not chat, and in
    # settings files written before chat existed (they still load).
    chat: GenerationSettings | None = None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SETTINGS_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PredictionSettings | None:
        """The folder's `mixkit_settings.json`, or None when it has none."""
        path = Path(directory) / SETTINGS_NAME
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        chat = data.get("chat")  # optional: absent from files written before chat existed
        return cls(data["prompt"], data["vqa_prompt"], GenerationSettings(**data["caption"]),
                   GenerationSettings(**data["vqa"]), GenerationSettings(**chat) if chat is not None else None)
