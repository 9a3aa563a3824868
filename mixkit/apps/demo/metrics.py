"""The demo's `metrics.json`: held-out scores beside the baselines, losses, timings, memory and versions."""

from __future__ import annotations

import resource
from dataclasses import asdict
from typing import Any

from mixkit.apps.demo.config import DemoConfig
from mixkit.utils.versions import library_versions


def peak_memory_mib() -> dict[str, float]:
    """Peak resident memory (ru_maxrss is in KiB on Linux) of this process and of its children (Java)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_memory_mib": round(own, 1), "peak_memory_children_mib": round(children, 1)}


def build_metrics(config: DemoConfig, evaluation: dict, baselines: dict, losses: dict, seconds: dict,
                  wall: float) -> dict[str, Any]:
    vqa, caption = evaluation["vqa"]["scores"], evaluation["caption"]["scores"]
    return {
        "vqa_accuracy": vqa["overall"],
        "vqa_baseline_accuracy": baselines["vqa"]["overall"],
        "vqa_per_answer_type": vqa["perAnswerType"],
        "vqa_baseline_per_answer_type": baselines["vqa"]["perAnswerType"],
        "cider": caption["CIDEr"],
        "cider_baseline": baselines["caption"]["CIDEr"],
        "caption_scores": caption,
        "caption_baseline_scores": baselines["caption"],
        "caption_baseline_text": baselines["caption_text"],
        "num_test_images": evaluation["caption"]["num_images"],
        "num_test_questions": evaluation["vqa"]["num_questions"],
        "final_losses": {stage: rows[-1]["loss"] for stage, rows in losses.items() if rows},
        "stage_seconds": {name: round(value, 1) for name, value in seconds.items()},
        "wall_time_s": round(wall, 1),
        **peak_memory_mib(),
        "config": asdict(config),
        "versions": library_versions(),
    }


def summary(metrics: dict[str, Any]) -> str:
    """Three lines for the terminal: both scores against their baselines, time and memory."""
    return "\n".join([
        f"VQA accuracy   {metrics['vqa_accuracy']:6.2f}   (baseline {metrics['vqa_baseline_accuracy']:.2f})",
        f"CIDEr          {metrics['cider']:6.3f}   (baseline {metrics['cider_baseline']:.3f})",
        f"wall time      {metrics['wall_time_s']:6.1f} s, peak memory {metrics['peak_memory_mib']:.0f} MiB",
    ])
