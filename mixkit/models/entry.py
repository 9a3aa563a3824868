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
class ConvertRecipe:
    """How to build a checkpoint published outside the Hugging Face layout (an open_clip or EVA-CLIP file): the
    files to download, then one `mixkit convert` command; `command` holds `{output}` for the target folder."""

    origin: str  # who publishes the file, for messages and tables ("open_clip", "EVA-CLIP")
    downloads: tuple[str, ...]  # URLs or `hf download ...` commands, in order
    command: str

    def instructions(self, target: object) -> list[str]:
        return [f"  download {item}" if item.startswith("https://") else f"  {item}" for item in self.downloads] + [
            "  " + self.command.format(output=target)]


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
    convert: ConvertRecipe | None = None  # set when the weights come from a non-Hub file and `mixkit convert`

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
        if self.hf_repo is not None:
            return self.hf_repo
        if self.convert is not None:
            return f"{self.convert.origin} file (mixkit convert)"
        return "LAVIS .pth" if self.lavis_url is not None else "official .pth (mixkit convert)"
