"""`auto_label` over a folder: a COCO instances file that pycocotools loads and `mixkit data check` passes, with
boxes clipped and masks equal to the app's own; killing a run and re-running it continues where it stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mixkit import Appflow
from mixkit.apps.appflow import autolabel
from mixkit.apps.appflow.coco import category_name, clip_box, coco_instances
from mixkit.cli import main


def _run(models, folder, output, capsys) -> dict:
    code = main(["app", "run", "auto_label", "--models", str(models.blip2), str(models.grounding_dino),
                 str(models.sam), "--image", str(folder), "--output", str(output), "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)

def test_clip_box_and_categories() -> None:
    assert clip_box([-5.5, 10.0, 200.0, 40.0], 150, 130) == [0.0, 10.0, 150.0, 30.0]
    assert clip_box([160.0, 10.0, 200.0, 40.0], 150, 130) is None
    assert category_name("dog", ["cat", "dog"]) == "dog"
    assert category_name("black dog. [SEP]", ["cat", "dog"]) == "dog"
    assert category_name("", ["cat"]) == "object"

def test_auto_label_folder_to_coco_and_resume(vision_models, image_folder, tmp_path, capsys, monkeypatch) -> None:
    from pycocotools.coco import COCO

    record = _run(vision_models, image_folder, tmp_path / "full", capsys)
    assert record["num_images"] == 2 and record["num_annotations"] > 0
    coco = COCO(record["annotations"])
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == ["a.png", "sub/b.jpg"]
    assert main(["data", "check", "--kind", "coco_instances", "--annotations", record["annotations"],
                 "--image-root", str(image_folder)]) == 0
    assert "0 problems" in capsys.readouterr().out

    # The annotations are the app's own results on each image, boxes clipped to it.
    task = Appflow(app="auto_label", models=[str(vision_models.blip2), str(vision_models.grounding_dino),
                                             str(vision_models.sam)])
    first = coco.dataset["images"][0]
    state = task(image=Image.open(image_folder / first["file_name"]).convert("RGB"))
    assert first["caption"] == state["result"]
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[first["id"]]))
    kept = [i for i, box in enumerate(state["boxes"]) if clip_box(box, first["width"], first["height"])]
    assert len(annotations) == len(kept)
    for annotation, index in zip(annotations, kept):
        assert annotation["bbox"] == clip_box(state["boxes"][index], first["width"], first["height"])
        assert np.array_equal(coco.annToMask(annotation), np.asarray(state["seg_masks"][index]) > 127)
        names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
        assert names[annotation["category_id"]] == category_name(state["labels"][index], state["prompt"].split(","))
    assert len(list((tmp_path / "full" / "pictures").glob("*.png"))) == 2

    # Killed after the first image: the re-run labels only the second, and the file is the same.
    labelled = []
    real_label = autolabel.FolderLabeler.label

    def failing_label(self, unit):
        if labelled:
            raise KeyboardInterrupt("killed")
        labelled.append(unit.file_name)
        return real_label(self, unit)

    monkeypatch.setattr(autolabel.FolderLabeler, "label", failing_label)
    with pytest.raises(KeyboardInterrupt):
        main(["app", "run", "auto_label", "--models", str(vision_models.blip2), str(vision_models.grounding_dino),
              str(vision_models.sam), "--image", str(image_folder), "--output", str(tmp_path / "resumed")])
    assert not (tmp_path / "resumed" / "annotations.json").exists()

    def counting_label(self, unit):
        labelled.append(unit.file_name)
        return real_label(self, unit)

    monkeypatch.setattr(autolabel.FolderLabeler, "label", counting_label)
    resumed = _run(vision_models, image_folder, tmp_path / "resumed", capsys)
    assert labelled == ["a.png", "sub/b.jpg"]  # each image labelled once over the two runs
    assert json.loads((tmp_path / "resumed" / "annotations.json").read_text()) == coco.dataset
    assert resumed["num_annotations"] == record["num_annotations"]

def test_rerun_with_other_settings_is_refused(vision_models, image_folder, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(autolabel, "label_folder", lambda *args, **kwargs: coco_instances([]))
    args = ["app", "run", "auto_label", "--models", str(vision_models.blip2), str(vision_models.grounding_dino),
            str(vision_models.sam), "--image", str(image_folder), "--output", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--box_threshold", "0.5"]) == 2
    assert "other settings" in capsys.readouterr().err

def test_data_check_rejects_a_broken_coco_file(tmp_path, capsys) -> None:
    broken = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
              "categories": [{"id": 1, "name": "dog"}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [5, 5, 10, 2], "area": 4,
                               "iscrowd": 0, "segmentation": {"size": [10, 9], "counts": "x"}}]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(broken))
    assert main(["data", "check", "--kind", "coco_instances", "--annotations", str(path), "--no-check-images"]) == 2
    out = capsys.readouterr().out
    assert "no category with id 2" in out and "outside its 10x10 image" in out and "RLE size [10, 9]" in out
