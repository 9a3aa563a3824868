"""`mixkit demo`: the whole BLIP-2 workflow of the article, on a CPU, in a few minutes.

    shapes data -> tokenizers -> "pretrained" frozen ViT and Flan-T5-style LM -> stage 1 (Q-Former:
    ITC + ITM + ITG, ViT frozen) -> stage 2 (Q-Former + projection; ViT and LM frozen; captions and
    VQA pairs) -> held-out evaluation with the official scorers and both baselines -> predictions on
    a few images -> DIR/metrics.json and DIR/report.html.

BLIP-2 assumes its image encoder and language model are already pretrained. Real ones are gigabytes,
so the demo makes tiny ones first, cheaply (`pretraining`). Every stage runs through `Blip2Trainer` with
a task object (`training`); images are decoded once and kept in memory (`data`).

Modules: `config` (DemoConfig), `data`, `training`, `pretraining`, `stages`, `evaluation`, `metrics`,
`report`, `progress`, and `workflow` (`run_demo(DemoConfig(), output)`, the library entry point). This
module holds only the command line, so that building the `mixkit` parser does not import torch.

`mixkit demo --family clip` runs the second demo instead: a tiny CLIP trained from scratch on the shapes captions
and zero-shot classification of held-out images (`clip_config`, `clip_workflow`, `clip_zeroshot`, `clip_report`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

FAMILIES = ("blip2", "clip")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mixkit demo`."""
    parser.add_argument("--output", type=Path, default=Path("mixkit-demo"),
                        help="folder for metrics.json, report.html and the run's files (default ./mixkit-demo)")
    parser.add_argument("--seed", type=int, default=0, help="one seed for data, weights and batches (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; see DemoConfig)")
    parser.add_argument("--family", choices=FAMILIES, default="blip2",
                        help="blip2 (default): the BLIP-2 workflow; clip: a tiny CLIP trained from scratch, then "
                             "zero-shot classification of held-out images (mixkit.apps.demo.clip_workflow)")


def run(args: argparse.Namespace) -> int:
    """`mixkit demo`: progress on stderr, the summary and the report's path on stdout."""
    if getattr(args, "family", "blip2") == "clip":
        return run_clip(args)
    from mixkit.apps.demo.config import DemoConfig
    from mixkit.apps.demo.metrics import summary
    from mixkit.apps.demo.workflow import run_demo

    logging.getLogger("transformers").setLevel(logging.ERROR)
    metrics = run_demo(DemoConfig(seed=args.seed, threads=args.threads), args.output)
    print(summary(metrics))
    print(f"report: {(args.output / 'report.html').resolve()}")
    return 0


def run_clip(args: argparse.Namespace) -> int:
    """`mixkit demo --family clip`: the same outputs (metrics.json, report.html) for the CLIP workflow."""
    from mixkit.apps.demo.clip_config import ClipDemoConfig
    from mixkit.apps.demo.clip_workflow import clip_summary, run_clip_demo

    logging.getLogger("transformers").setLevel(logging.ERROR)
    metrics = run_clip_demo(ClipDemoConfig(seed=args.seed, threads=args.threads), args.output)
    print(clip_summary(metrics))
    print(f"report: {(args.output / 'report.html').resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixkit demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
