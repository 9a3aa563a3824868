"""Digests of every result file mixkit writes on the shapes data: run before and after a refactor, then diff.

    python benchmarks/output_digest.py OUT_BEFORE > before.txt    # on the old commit (e.g. a git worktree)
    python benchmarks/output_digest.py OUT_AFTER > after.txt      # on the new one
    diff before.txt after.txt                                      # no output: byte-identical results

It builds tiny random checkpoints (OPT, Flan-T5, stage 1) and a small shapes set under a fixed folder (metrics
files record the model path), then runs `mixkit predict caption|vqa`, `mixkit eval vqa|caption|retrieval` and
`mixkit score vqa|caption` as a user would, in separate processes, and prints one sha256 prefix per output file.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset

try:
    from mixkit.testing import build_tiny_predictor, build_tiny_stage1
except ImportError:  # commits before the layered package kept these in mixkit/apps/tiny.py
    from mixkit.apps.tiny import build_tiny_predictor, build_tiny_stage1

WORK = Path("/tmp/mixkit-output-digest")
PATTERN = "images/val/shapes_val_{image_id:06d}.jpg"


def prepare() -> ShapesPaths:
    if not (WORK / "done").exists():
        shutil.rmtree(WORK, ignore_errors=True)
        write_shapes_dataset(WORK / "shapes", ShapesConfig(num_train=2, num_val=4, num_test=4, image_size=32))
        build_tiny_predictor(WORK / "opt", "opt")
        build_tiny_predictor(WORK / "t5", "t5")
        build_tiny_stage1(WORK / "stage1")
        (WORK / "done").write_text("1")
    return ShapesPaths.under(WORK / "shapes")


def run(out: Path, name: str, argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "mixkit.cli", *argv], capture_output=True, text=True)
    (out / f"{name}.stdout").write_text(result.stdout)
    (out / f"{name}.rc").write_text(str(result.returncode))
    if result.returncode:
        print(name, result.stderr[-2000:], file=sys.stderr)


def commands(paths: ShapesPaths, out: Path) -> dict[str, list[str]]:
    images = sorted(str(p) for p in paths.images["test"].glob("*.jpg"))
    vqa = ["--questions", str(paths.vqa_questions["val"]), "--annotations", str(paths.vqa_annotations["val"]),
           "--image-root", str(paths.root), "--image-pattern", PATTERN]
    caption = ["--records", str(paths.caption_test), "--image-root", str(paths.root),
               "--gt", str(paths.caption_gt["test"])]
    runs: dict[str, list[str]] = {}
    for kind in ("opt", "t5"):
        model = ["--model", str(WORK / kind)]
        runs[f"predict_caption_{kind}"] = ["predict", "caption", *model, "--image", *images, "--json"]
        runs[f"predict_caption_{kind}_beam1"] = ["predict", "caption", *model, "--image", *images, "--json",
                                                 "--num-beams", "1", "--prompt", "a photo of"]
        runs[f"predict_vqa_{kind}"] = ["predict", "vqa", *model, "--image", *images, "--question",
                                       "what colour is the circle?", "--json"]
        for task, extra in (("vqa", vqa), ("caption", caption)):
            runs[f"eval_{task}_{kind}"] = ["eval", task, *model, "--output-dir", str(out / f"eval_{task}_{kind}"),
                                           "--batch-size", "3", *extra]
    runs["eval_retrieval"] = ["eval", "retrieval", "--model", str(WORK / "stage1"), "--records",
                              str(paths.caption_test), "--image-root", str(paths.root), "--output-dir",
                              str(out / "eval_retrieval"), "--k-test", "3"]
    runs["score_vqa"] = ["score", "vqa", "--questions", str(paths.vqa_questions["val"]), "--annotations",
                         str(paths.vqa_annotations["val"]), "--results",
                         str(out / "eval_vqa_opt" / "val_vqa_result.json")]
    runs["score_caption"] = ["score", "caption", "--annotations", str(paths.caption_gt["test"]), "--results",
                             str(out / "eval_caption_t5" / "test_caption_result.json")]
    return runs


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    paths = prepare()
    for name, argv in commands(paths, out).items():
        run(out, name, argv)
    for partial in out.glob("eval_*/partial/*"):
        partial.unlink()  # resume bookkeeping, not a result
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(hashlib.sha256(path.read_bytes()).hexdigest()[:16], path.relative_to(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
