"""`auto_label` over a folder: each image captioned (BLIP-2), its noun tags detected (Grounding DINO) and
segmented (SAM), then one COCO instances file (`coco.py`) for the folder.

Runs like evaluation (`mixkit.eval.sharding`): under torchrun each process labels `images[rank::world]`,
finished images are appended to `OUTPUT/partial/rank{r}.jsonl` as they are done, and a re-run of the same
command skips them, so killing and re-running continues where it stopped. `OUTPUT/auto_label_run.json` records
the folder, models and parameters; a re-run with other settings into the same folder is refused.

Files: OUTPUT/annotations.json (COCO instances), OUTPUT/pictures/<image id>_<name>.png (boxes, labels and masks
drawn), OUTPUT/partial/ (the per-process records).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixkit.apps.appflow.coco import coco_instances, mask_rle
from mixkit.apps.appflow.options import AppRunConfig, AppUsageError
from mixkit.eval.sharding import RunOptions, run_sharded
from mixkit.utils.distributed import DistContext, close_distributed, init_distributed

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ANNOTATIONS_NAME = "annotations.json"
RUN_NAME = "auto_label_run.json"
PICTURES_DIR = "pictures"


@dataclass(frozen=True)
class FolderImage:
    image_id: int  # 1-based position in the sorted listing: the same ids on every run and process
    path: Path
    file_name: str  # relative to the folder, as COCO's file_name


def list_images(folder: Path) -> list[FolderImage]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise AppUsageError(f"--image {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return [FolderImage(i, path, path.relative_to(folder).as_posix()) for i, path in enumerate(paths, start=1)]


def image_record(unit: FolderImage, image: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready record of one labelled image (see `coco.py`)."""
    detections = [{"box": [float(v) for v in box], "label": label, "score": float(score),
                   "segmentation": mask_rle(np.asarray(mask) > 127)}
                  for box, label, score, mask in zip(state["boxes"], state["labels"], state["scores"],
                                                     state["seg_masks"])]
    tags = [tag for tag in state["prompt"].split(",") if tag]
    return {"image_id": unit.image_id, "file_name": unit.file_name, "width": image.width, "height": image.height,
            "caption": state["result"], "tags": tags, "detections": detections}


class FolderLabeler:
    """Labels a batch of folder images with the app; writes each image's picture."""

    def __init__(self, task: Any, blip2_prompt: str | None, pictures: Path | None):
        self.task, self.blip2_prompt, self.pictures = task, blip2_prompt, pictures

    def label(self, unit: FolderImage) -> dict[str, Any]:
        from mixkit.apps.appflow.outputs import draw_result
        from mixkit.data.transforms import load_image

        image = load_image(unit.path)
        inputs = {"image": image} if self.blip2_prompt is None else {"image": image, "blip2_prompt": self.blip2_prompt}
        state = self.task(**inputs)
        if self.pictures is not None:
            self.pictures.mkdir(parents=True, exist_ok=True)
            draw_result(state).save(self.pictures / f"{unit.image_id}_{unit.path.stem}.png")
        return image_record(unit, image, state)

    def __call__(self, units: Sequence[FolderImage]) -> list[dict]:
        return [self.label(unit) for unit in units]


def check_run_file(output: Path, settings: dict[str, Any], ctx: DistContext) -> None:
    """Record the run's settings, or refuse to continue a run made with other settings."""
    path = output / RUN_NAME
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            raise AppUsageError(f"--output {output} holds an auto_label run with other settings ({path}); use "
                                "another --output folder or delete that one")
    elif ctx.is_main:
        output.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))


def label_folder(task: Any, folder: Path, output: Path, ctx: DistContext, blip2_prompt: str | None = None,
                 pictures: bool = True) -> dict[str, Any] | None:
    """Label every image of `folder`, continuing any earlier run in `output`; the COCO dictionary on rank 0."""
    units = list_images(folder)
    labeler = FolderLabeler(task, blip2_prompt, output / PICTURES_DIR if pictures else None)
    options = RunOptions(output, "image_id", batch_size=1, save_every=1, resume=True, desc="auto_label")
    records = run_sharded(units, lambda unit: [unit.image_id], labeler, options, ctx)
    if records is None:
        return None
    coco = coco_instances(records)
    (output / ANNOTATIONS_NAME).write_text(json.dumps(coco))
    return coco


def run_settings(config: AppRunConfig, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return {"folder": str(Path(config.image).resolve()), "models": list(config.models or []), "params": params,
            "blip2_prompt": inputs.get("blip2_prompt")}


def label_folder_command(config: AppRunConfig, params: dict[str, Any], inputs: dict[str, Any]) -> dict | None:
    """`mixkit app run auto_label --image FOLDER`: the JSON record on rank 0, None elsewhere."""
    from mixkit.apps.appflow.flow import Appflow

    output = Path(config.output)
    ctx = init_distributed()
    try:
        check_run_file(output, run_settings(config, params, inputs), ctx)
        task = Appflow(app="auto_label", models=config.models, device=ctx.device(config.device), **params)
        coco = label_folder(task, Path(config.image), output, ctx, inputs.get("blip2_prompt"))
    finally:
        close_distributed(ctx)
    if coco is None:
        return None
    return {"annotations": str(output / ANNOTATIONS_NAME), "num_images": len(coco["images"]),
            "num_annotations": len(coco["annotations"]), "categories": [c["name"] for c in coco["categories"]],
            "pictures": str(output / PICTURES_DIR), "files": [str(output / ANNOTATIONS_NAME)]}
