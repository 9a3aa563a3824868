"""`mixkit demo` at a tiny scale: every stage runs, the files are there, the report links resolve, and a
seeded stage repeats exactly. The real-scale acceptance (time, accuracy vs. baselines) is measured by
running `mixkit demo` itself; see the package docstring of `mixkit.apps.demo`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixkit.apps.demo.config import STAGES, DemoConfig, blip2_config
from mixkit.apps.demo.data import describe_scene, load_train_data, write_data
from mixkit.apps.demo.pretraining import pretrain_vision, scene_targets
from mixkit.apps.demo.workflow import run_demo, seed_everything
from mixkit.eval.caption_score import check_environment

REQUIRED_KEYS = {"vqa_accuracy", "vqa_baseline_accuracy", "cider", "cider_baseline", "wall_time_s",
                 "peak_memory_mib"}


def _java_available() -> bool:
    try:
        check_environment()
    except Exception:  # noqa: BLE001 - any reason the scorer cannot run
        return False
    return True


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if not _java_available():
        pytest.skip("the COCO caption scorer needs Java")
    output = tmp_path_factory.mktemp("demo")
    return output, run_demo(DemoConfig.tiny(), output)


def test_metrics_file_has_the_promised_keys(tiny_run: tuple[Path, dict]) -> None:
    output, metrics = tiny_run
    on_disk = json.loads((output / "metrics.json").read_text())
    assert REQUIRED_KEYS <= set(on_disk)
    assert on_disk["vqa_accuracy"] == metrics["vqa_accuracy"]
    assert 0 <= on_disk["vqa_baseline_accuracy"] <= 100 and on_disk["cider_baseline"] >= 0
    assert on_disk["peak_memory_mib"] > 0 and on_disk["wall_time_s"] > 0
    assert set(on_disk["final_losses"]) == set(STAGES)


def test_official_result_files_are_written(tiny_run: tuple[Path, dict]) -> None:
    output, _ = tiny_run
    answers = json.loads((output / "work/eval/vqa/test_vqa_result.json").read_text())
    captions = json.loads((output / "work/eval/caption/test_caption_result.json").read_text())
    assert answers and set(answers[0]) == {"question_id", "answer"}
    assert len(captions) == DemoConfig.tiny().num_test and set(captions[0]) == {"image_id", "caption"}


def test_report_references_existing_files(tiny_run: tuple[Path, dict]) -> None:
    output, _ = tiny_run
    page = (output / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    curves = [s for s in sources if s.endswith(".png")]
    images = [s for s in sources if s.endswith(".jpg")]
    assert len(curves) == len(STAGES)
    assert len(images) == DemoConfig.tiny().num_examples
    for source in sources:
        assert (output / source).is_file(), source
    assert "VQA accuracy" in page and "CIDEr" in page


def test_a_seeded_stage_repeats_exactly(tmp_path: Path) -> None:
    config = DemoConfig.tiny()
    paths = write_data(config, tmp_path / "data")
    data = load_train_data(paths, config)
    model_config = blip2_config(config, 100, 100, stage1=False)
    runs = []
    for attempt in range(2):
        seed_everything(config.seed, config.threads)
        runs.append(pretrain_vision(config, data, model_config, tmp_path / f"runs{attempt}"))
    (weights_a, losses_a), (weights_b, losses_b) = runs
    assert losses_a == losses_b
    for name in weights_a:
        torch.testing.assert_close(weights_a[name], weights_b[name], rtol=0, atol=0)


def test_scene_targets_name_every_cell() -> None:
    from mixkit.data.shapes import ShapesConfig, make_example

    scene = make_example("train", 0, ShapesConfig(num_train=1, num_val=0, num_test=0)).scene
    targets = scene_targets(scene)
    assert targets.shape == (9 * 3 + 1,)
    occupied = int((targets[:27].view(9, 3)[:, 0] > 0).sum())
    assert occupied == len(scene.shapes)
    description = describe_scene(scene)
    assert scene.background in description and all(s.kind in description for s in scene.shapes)


def test_config_rejects_missing_stages() -> None:
    with pytest.raises(ValueError, match="stages"):
        DemoConfig(steps={"vision": 1})


def test_the_command_line_does_not_import_torch() -> None:
    """Building the `mixkit` parser imports `mixkit.apps.demo`; the heavy modules wait until `run`."""
    code = "import sys, mixkit.apps.demo as d; assert callable(d.add_arguments) and callable(d.run); " \
           "print('torch' in sys.modules)"
    repo = Path(__file__).resolve().parents[2]  # `python -c` puts the working folder first on sys.path
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert result.stdout.strip() == "False"
