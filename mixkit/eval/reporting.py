"""What every evaluation reports besides its scores, and the table it prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mixkit.models.settings import GenerationSettings
from mixkit.utils.distributed import DistContext
from mixkit.utils.io import write_json
from mixkit.utils.versions import library_versions


def run_metadata(settings: GenerationSettings, batch_size: int, ctx: DistContext) -> dict[str, Any]:
    """What every generative metrics file records about how it was made (settings, layout, versions)."""
    return {"generation": asdict(settings), "batch_size": batch_size, "world_size": ctx.world_size,
            "versions": library_versions()}


def format_table(rows: Sequence[tuple[str, Any]], title: str) -> str:
    """A two-column table for the terminal; floats to 2 decimals."""
    cells = [(name, f"{value:.2f}" if isinstance(value, float) else str(value)) for name, value in rows]
    width = max([len(title)] + [len(name) for name, _ in cells])
    lines = [title, "-" * (width + 12)]
    lines += [f"{name:<{width}}  {value:>10}" for name, value in cells]
    return "\n".join(lines)


def write_outputs(output_dir: Path, result_name: str, results: Any, metrics: dict) -> dict:
    """The official result file, then metrics.json (written last: its presence means the run finished)."""
    write_json(Path(output_dir) / result_name, results)
    write_json(Path(output_dir) / "metrics.json", metrics)
    return metrics
