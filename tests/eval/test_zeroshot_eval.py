"""`mixkit eval zeroshot`: top-1 / top-5 / per-class arithmetic against hand counts (a pipeline whose similarities
the test sets), resume, bad input, the template ensemble against a direct computation, the shipped ImageNet data,
and real tiny CLIP and EVA-CLIP runs on generated shapes images."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import mixkit.eval.zeroshot_eval as zeroshot_eval
from mixkit.cli import main
from mixkit.data.shapes import KINDS, ShapesConfig, generate_scene, render_scene
from mixkit.data.zeroshot import imagenet_classnames, load_templates, openai_imagenet_templates
from mixkit.eval.config import ZeroShotEvalConfig
from mixkit.eval.zeroshot_eval import evaluate_zeroshot, zeroshot_scores
from mixkit.pipelines.auto import load_pipeline
from mixkit.pipelines.clip import ensemble_class_features
from mixkit.testing import build_tiny_clip, build_tiny_eva_clip

CLASSES = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]
# (label, the classes in the order the model ranks them for that image)
HAND_CASES = [
    (0, [0, 1, 2, 3, 4, 5, 6]),  # top-1 hit
    (0, [3, 0, 1, 2, 4, 5, 6]),  # top-5 hit only
    (1, [1, 0, 2, 3, 4, 5, 6]),  # top-1 hit
    (2, [0, 1, 3, 4, 5, 6, 2]),  # miss (7th)
    (2, [0, 1, 3, 4, 2, 5, 6]),  # top-5 hit only (5th)
    (4, [4, 3, 2, 1, 0, 5, 6]),  # top-1 hit
]
# Hand counts: top-1 3/6, top-5 5/6; per class c0 1/2, c1 1/1, c2 0/2, c4 1/1 -> mean (50+100+0+100)/4.
EXPECTED = {"top1": 50.0, "top5": 500.0 / 6, "mean_per_class": 62.5}


def test_scores_against_hand_counts() -> None:
    scores, per_class = zeroshot_scores([c[0] for c in HAND_CASES], [c[1] for c in HAND_CASES], CLASSES)
    assert scores == pytest.approx(EXPECTED)
    assert [(row["count"], row["top1"], row["top5"]) for row in per_class] == [
        (2, 50.0, 100.0), (1, 100.0, 100.0), (2, 0.0, 50.0), (0, None, None), (1, 100.0, 100.0), (0, None, None),
        (0, None, None)]


class ControlledPipeline:
    """Class features = identity, image features = per-image scores: the similarity matrix is what the test says."""

    def __init__(self, scores: dict[str, torch.Tensor]):
        self.scores, self.encoded = scores, []

    def class_features(self, classnames, templates) -> torch.Tensor:
        return torch.eye(len(classnames))

    def image_features(self, images) -> torch.Tensor:
        self.encoded += [str(image) for image in images]
        return torch.stack([self.scores[str(image)] for image in images])

    def itc_similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        return image_feats @ text_feats.T


def _write_inputs(folder: Path, labels: list, classes: list[str]) -> tuple[Path, Path]:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for index, label in enumerate(labels):
        render_scene(generate_scene(random.Random(index), ShapesConfig(max_shapes=1)), 32).save(
            folder / "img" / f"{index}.png")
        records.append({"image": f"img/{index}.png", "label": label})
    (folder / "images.json").write_text(json.dumps(records))
    (folder / "classes.json").write_text(json.dumps(classes))
    return folder / "images.json", folder / "classes.json"


def _controlled(tmp_path: Path, monkeypatch) -> ControlledPipeline:
    images, _ = _write_inputs(tmp_path, [c[0] for c in HAND_CASES], CLASSES)
    scores = {}
    for index, (_, ranking) in enumerate(HAND_CASES):
        row = torch.zeros(len(CLASSES))
        row[ranking] = torch.arange(len(CLASSES), 0, -1).float()  # best first
        scores[str(tmp_path / "img" / f"{index}.png")] = row
    pipeline = ControlledPipeline(scores)
    monkeypatch.setattr(zeroshot_eval, "_load_pipeline", lambda config, ctx: pipeline)
    return pipeline


def test_full_run_with_controlled_similarities(tmp_path: Path, monkeypatch, capsys) -> None:
    _controlled(tmp_path, monkeypatch)
    code = main(["eval", "zeroshot", "--model", "controlled", "--images", str(tmp_path / "images.json"),
                 "--classes", str(tmp_path / "classes.json"), "--output-dir", str(tmp_path / "out"),
                 "--batch-size", "4"])
    assert code == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert printed == metrics and metrics["scores"] == pytest.approx(EXPECTED)
    assert (metrics["num_images"], metrics["num_classes"], metrics["templates"]) == (6, 7, ["a photo of a {}."])
    assert "top1" in captured.err and "50.00" in captured.err  # the summary table
    result = json.loads((tmp_path / "out" / "val_zeroshot_result.json").read_text())
    assert [r["top5"] for r in result] == [ranking[:5] for _, ranking in HAND_CASES]


def test_resume_reuses_saved_images(tmp_path: Path, monkeypatch) -> None:
    pipeline = _controlled(tmp_path, monkeypatch)
    config = ZeroShotEvalConfig(model="controlled", images=tmp_path / "images.json",
                                classes=str(tmp_path / "classes.json"), output_dir=tmp_path / "out", batch_size=2,
                                save_every=1)
    first = evaluate_zeroshot(config)
    pipeline.encoded.clear()
    partial = tmp_path / "out" / "partial" / "rank0.jsonl"
    partial.write_text("\n".join(partial.read_text().splitlines()[:4]) + "\n")  # as if killed after 4 images
    config.resume = True
    second = evaluate_zeroshot(config)
    assert len(pipeline.encoded) == 2 and second["scores"] == first["scores"] == pytest.approx(EXPECTED)


@pytest.mark.parametrize("labels, extra, message", [
    (["c9"], [], "label 'c9' is not a class name"),
    ([7], [], "outside 0..6"),
    ([0], ["--templates", "TEMPLATES"], "exactly one '{}'"),
    ([0], ["--classes", "nowhere.json"], "nowhere.json"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, labels, extra, message, capsys) -> None:
    images, classes = _write_inputs(tmp_path, labels, CLASSES)
    (tmp_path / "templates.json").write_text(json.dumps(["a photo of {} and {}"]))
    extra = [str(tmp_path / "templates.json") if item == "TEMPLATES" else item for item in extra]
    code = main(["eval", "zeroshot", "--model", "unused", "--images", str(images), "--classes", str(classes),
                 "--output-dir", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and captured.err.count("\n") == 1 and message in captured.err


def test_shipped_imagenet_data() -> None:
    names, templates = imagenet_classnames(), openai_imagenet_templates()
    assert len(names) == 1000 and names[:2] == ["tench", "goldfish"] and names[-1] == "toilet paper"
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."
    assert load_templates("openai-imagenet") == templates
    assert sorted({n for n in names if names.count(n) > 1}) == ["missile", "sunglasses"]  # OpenAI's list repeats two


# ---------------------------------------------------------------- real tiny models


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    clip, eva = tmp_path_factory.mktemp("clip"), tmp_path_factory.mktemp("eva")
    build_tiny_clip(clip)
    build_tiny_eva_clip(eva)
    return {"clip": clip, "eva_clip": eva}


def test_template_ensemble_equals_direct_computation(folders) -> None:
    pipeline = load_pipeline(str(folders["eva_clip"]))
    templates = ["a photo of a {}.", "a drawing of a {}.", "a big {}."]
    got = pipeline.class_features(list(KINDS), templates, batch_size=5)
    for row, name in zip(got, KINDS):
        each = torch.stack([pipeline.text_features([t.format(name)])[0] for t in templates])
        direct = each.mean(0) / each.mean(0).norm()
        torch.testing.assert_close(row, direct, atol=1e-6, rtol=0)
    assert (got - pipeline.class_features(list(KINDS), templates[:1])).abs().max() > 1e-3
    rows = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    torch.testing.assert_close(ensemble_class_features(rows, 2, 3)[1],
                               torch.nn.functional.normalize(rows[3:].mean(0), dim=0))


@pytest.mark.parametrize("family", ["clip", "eva_clip"])
def test_tiny_model_end_to_end_on_shapes(folders, family: str, tmp_path: Path, capsys) -> None:
    rng = random.Random(0)
    scenes = [generate_scene(rng, ShapesConfig(max_shapes=1)) for _ in range(8)]
    (tmp_path / "img").mkdir()
    records = []
    for index, scene in enumerate(scenes):
        render_scene(scene, 32).save(tmp_path / "img" / f"{index}.png")
        records.append({"image": f"img/{index}.png", "label": scene.shapes[0].kind})
    (tmp_path / "images.json").write_text(json.dumps(records))
    (tmp_path / "classes.json").write_text(json.dumps(list(KINDS)))
    code = main(["eval", "zeroshot", "--model", str(folders[family]), "--images", str(tmp_path / "images.json"),
                 "--classes", str(tmp_path / "classes.json"), "--output-dir", str(tmp_path / "out"),
                 "--batch-size", "3"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    # The same top-1 as predict classify's probabilities (one template): argmax of the softmax = of the cosine.
    pipeline = load_pipeline(str(folders[family]))
    probs = pipeline.classify([tmp_path / "img" / f"{i}.png" for i in range(8)], list(KINDS))
    labels = torch.tensor([KINDS.index(r["label"]) for r in records])
    assert metrics["scores"]["top1"] == pytest.approx(100.0 * (probs.argmax(-1) == labels).float().mean().item())
    assert metrics["scores"]["top5"] == 100.0  # 4 classes: every label is in the top 5
    assert sum(row["count"] for row in metrics["per_class"]) == 8
