"""The shape of a catalogue entry: one named checkpoint, family-neutral."""

from __future__ import annotations

from dataclasses import dataclass

from mixkit.data.image_stats import CLIP_MEAN, CLIP_STD
from mixkit.models.settings import PredictionSettings

# Tasks a pipeline can run for an entry; `mixkit.pipelines` maps (family, task) to its methods.
TASKS = ("caption", "vqa", "chat", "retrieval", "itm", "itc", "classify", "match", "grounding")


@dataclass(frozen=True)
class ReportedScore:
    """A published number for a checkpoint, with where it was published."""

    benchmark: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class CheckpointEntry:
    """One named checkpoint: its family and tasks, where its weights come from, how to run it."""

    name: str
    description: str
    family: str  # a folder of mixkit/models/ (e.g. "blip2", "clip")
    kind: str  # the family's own variant label (BLIP-2: "stage1", "opt", "t5"; CLIP: "vit-b-32", ...)
    tasks: tuple[str, ...]
    hf_repo: str | None
    lavis_url: str | None  # None: not a LAVIS model (e.g. CLIP, whose weights come from the Hub only)
    lavis_vit_url: str | None
    lavis_config: str  # "" when there is no LAVIS config
    language_model: str | None
    image_size: int
    settings: PredictionSettings | None  # None: the checkpoint generates no text
    paper_scores: tuple[ReportedScore, ...] = ()
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        # Catch a mistyped entry at import rather than at generation time.
        unknown = set(self.tasks) - set(TASKS)
        if unknown or not self.tasks:
            raise ValueError(f"{self.name}: tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        generative = bool({"caption", "vqa"} & set(self.tasks))
        if generative != (self.settings is not None):
            raise ValueError(f"{self.name}: generative entries (caption/vqa) need settings, others none")
        if self.image_size <= 0:
            raise ValueError(f"{self.name}: image_size must be positive")

    @property
    def prompt(self) -> str:
        """The caption prompt ("" for none)."""
        return self.settings.prompt if self.settings is not None else ""

    @property
    def source(self) -> str:
        """Short label for tables: the Hub repo if there is one, else LAVIS."""
        return self.hf_repo if self.hf_repo is not None else "LAVIS .pth"
