"""The demo's report: one self-contained HTML page with the metrics table, loss-curve PNGs beside it
and example images with the model's captions and answers next to the references."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STAGE_TITLES = {
    "vision": "ViT pretraining (cell attributes)",
    "language": "LM pretraining (description -> text)",
    "stage1": "Stage 1: ITC + ITM + ITG",
    "stage2": "Stage 2: LM loss, captions + VQA",
}

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.curves img { width: 260px; margin-right: 6px; }
.example img { width: 144px; image-rendering: pixelated; }
.ok { color: #1a7f37; } .bad { color: #c62828; }
.muted { color: #777; font-size: 90%; }
"""


def plot_losses(losses: Mapping[str, Sequence[Mapping[str, float]]], directory: Path) -> list[str]:
    """One PNG per training run (`loss_<stage>.png`), returned as file names relative to `directory`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    names = []
    for stage, rows in losses.items():
        if not rows:
            continue
        figure, axis = plt.subplots(figsize=(4, 3), dpi=80)
        axis.plot([row["step"] for row in rows], [row["loss"] for row in rows], marker=".")
        axis.set(title=STAGE_TITLES.get(stage, stage), xlabel="step", ylabel="training loss")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        name = f"loss_{stage}.png"
        figure.savefig(directory / name)
        plt.close(figure)
        names.append(name)
    return names


def _row(cells: Sequence[Any], header: bool = False) -> str:
    tag = "th" if header else "td"
    parts = []
    for cell in cells:
        numeric = isinstance(cell, (int, float))
        text = f"{cell:.3f}" if isinstance(cell, float) else html.escape(str(cell))
        parts.append(f'<{tag} class="num">{text}</{tag}>' if numeric else f"<{tag}>{text}</{tag}>")
    return "<tr>" + "".join(parts) + "</tr>"


def metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = [
        _row(["metric (held-out test split)", "model", "baseline", "baseline is"], header=True),
        _row(["VQA accuracy (%)", metrics["vqa_accuracy"], metrics["vqa_baseline_accuracy"],
              "most frequent training answer of the question type"]),
    ]
    for answer_type, value in sorted(metrics["vqa_per_answer_type"].items()):
        rows.append(_row([f"  VQA {answer_type}", value, metrics["vqa_baseline_per_answer_type"][answer_type], ""]))
    rows.append(_row(["CIDEr", metrics["cider"], metrics["cider_baseline"],
                      f"the most frequent training caption: \"{metrics['caption_baseline_text']}\""]))
    for name in ("Bleu_4", "METEOR", "ROUGE_L"):
        rows.append(_row([name, metrics["caption_scores"][name], metrics["caption_baseline_scores"][name], ""]))
    return "<table>" + "".join(rows) + "</table>"


def run_table(metrics: Mapping[str, Any]) -> str:
    rows = [_row(["wall time (s)", metrics["wall_time_s"]]), _row(["peak memory (MiB)", metrics["peak_memory_mib"]]),
            _row(["test images / questions", f"{metrics['num_test_images']} / {metrics['num_test_questions']}"])]
    rows += [_row([f"  {name} (s)", value]) for name, value in metrics["stage_seconds"].items()]
    return "<table>" + "".join(rows) + "</table>"


def _answer_cell(qa: Mapping[str, str]) -> str:
    verdict = "ok" if qa["answer"] == qa["truth"] else "bad"
    return (f"{html.escape(qa['question'])} <b class=\"{verdict}\">{html.escape(qa['answer'])}</b>"
            f" <span class=\"muted\">(truth: {html.escape(qa['truth'])})</span>")


def example_rows(examples: Sequence[Mapping[str, Any]]) -> str:
    rows = [_row(["image", "generated caption / references", "questions: answer (truth)"], header=True)]
    for example in examples:
        references = "".join(f"<li>{html.escape(r)}</li>" for r in example["references"])
        answers = "<br>".join(_answer_cell(qa) for qa in example["qa"])
        rows.append(
            f'<tr class="example"><td><img src="{html.escape(example["image"])}" alt="test image"></td>'
            f"<td><b>{html.escape(example['caption'])}</b><ul class=\"muted\">{references}</ul></td>"
            f"<td>{answers}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def render_html(metrics: Mapping[str, Any], curves: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> str:
    images = "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in curves)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mixkit demo report</title><style>{STYLE}</style></head>
<body>
<h1>mixkit demo: BLIP-2 (tiny Flan-T5 flavour) on synthetic shapes</h1>
<p>Pipeline: shapes data &rarr; tokenizers &rarr; pretrained frozen ViT and LM &rarr; stage 1 (Q-Former) &rarr;
stage 2 (Q-Former + projection, captions and VQA) &rarr; held-out evaluation with the official VQA and COCO
caption scorers. All numbers below come from <code>metrics.json</code>.</p>
<h2>Metrics</h2>
{metrics_table(metrics)}
<h2>Training losses</h2>
<div class="curves">{images}</div>
<h2>Examples (held-out images)</h2>
{example_rows(examples)}
<h2>Run</h2>
{run_table(metrics)}
</body></html>
"""


def write_report(directory: Path, metrics: Mapping[str, Any], losses: Mapping[str, Sequence[Mapping[str, float]]],
                 examples: Sequence[Mapping[str, Any]]) -> Path:
    """`directory/report.html` plus its `loss_*.png` files; image paths in `examples` are relative to it."""
    directory = Path(directory)
    curves = plot_losses(losses, directory)
    path = directory / "report.html"
    path.write_text(render_html(metrics, curves, examples), encoding="utf-8")
    return path
