"""The CLIP demo's report: one HTML page in the BLIP-2 demo's style (its table helpers, style and loss plot):
zero-shot top-1 per task beside the untrained model and chance, the loss curve, example images with the
trained model's three most probable labels."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mixkit.apps.demo.report import STYLE, _row, plot_losses


def zero_shot_table(metrics: Mapping[str, Any]) -> str:
    rows = [_row(["task (held-out images)", "labels", "images", "prompt", "top-1 trained (%)",
                  "top-1 untrained (%)", "chance (%)"], header=True)]
    for name, task in metrics["zero_shot"].items():
        rows.append(_row([f"{name}: {task['description']}", task["num_labels"], task["num_images"],
                          task["template"], task["top1"], task["untrained_top1"], task["chance"]]))
    return "<table>" + "".join(rows) + "</table>"


def run_table(metrics: Mapping[str, Any]) -> str:
    rows = [_row(["wall time (s)", metrics["wall_time_s"]]), _row(["peak memory (MiB)", metrics["peak_memory_mib"]]),
            _row(["training loss, first / last logged", f"{metrics['first_loss']:.3f} / {metrics['final_loss']:.3f}"]),
            _row(["learned logit scale (clamped at 100)", metrics["logit_scale"]])]
    rows += [_row([f"  {name} (s)", value]) for name, value in metrics["stage_seconds"].items()]
    return "<table>" + "".join(rows) + "</table>"


def example_rows(examples: Sequence[Mapping[str, Any]]) -> str:
    rows = [_row(["image", "truth", "trained model: three most probable labels"], header=True)]
    for example in examples:
        verdict = "ok" if example["predictions"][0][0] == example["truth"] else "bad"
        guesses = "<br>".join(f"{html.escape(label)} <span class=\"muted\">({probability:.3f})</span>"
                              for label, probability in example["predictions"])
        rows.append(f'<tr class="example"><td><img src="{html.escape(example["image"])}" alt="test image"></td>'
                    f'<td>{html.escape(example["truth"])}</td><td class="{verdict}">{guesses}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def render_html(metrics: Mapping[str, Any], curves: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> str:
    images = "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in curves)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mixkit demo report: CLIP</title><style>{STYLE}</style></head>
<body>
<h1>mixkit demo: a tiny CLIP trained from scratch on synthetic shapes</h1>
<p>Pipeline: shapes data &rarr; CLIP BPE tokenizer &rarr; random tiny CLIP &rarr; contrastive training (open_clip's
recipe) &rarr; zero-shot classification of held-out images from class names in a prompt, by the trained model and
by the same model before training. All numbers below come from <code>metrics.json</code>.</p>
<h2>Zero-shot top-1</h2>
{zero_shot_table(metrics)}
<h2>Training loss</h2>
<div class="curves">{images}</div>
<h2>Examples (held-out images, task "shape")</h2>
{example_rows(examples)}
<h2>Run</h2>
{run_table(metrics)}
</body></html>
"""


def write_clip_report(directory: Path, metrics: Mapping[str, Any], losses: Sequence[Mapping[str, float]],
                      examples: Sequence[Mapping[str, Any]]) -> Path:
    """`directory/report.html` and its `loss_clip.png`; example image paths are relative to `directory`."""
    directory = Path(directory)
    curves = plot_losses({"clip": losses}, directory)
    path = directory / "report.html"
    path.write_text(render_html(metrics, curves, examples), encoding="utf-8")
    return path
