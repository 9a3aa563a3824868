"""What `mixkit app run` prints and writes: media values become files under the output folder (named by their
key), everything else stays data; detection results also get a picture with boxes, labels and masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from mixkit.apps.appflow.media import is_media, write_media

PICTURE_KEY = "picture"  # the drawn result (boxes, labels, masks over the image)


def _plain(value: Any) -> Any:
    """JSON-ready data: tensors and arrays as lists; None for what has no plain form."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return None


def _write_value(key: str, value: Any, directory: Path, files: list[str]) -> Any:
    if is_media(value):
        path = str(write_media(value, directory, key))
        files.append(path)
        return path
    if isinstance(value, (list, tuple)) and value and all(is_media(item) for item in value):
        paths = [str(write_media(item, directory / key, f"{key}_{index}")) for index, item in enumerate(value)]
        files.extend(paths)
        return paths
    return _plain(value)


def draw_result(state: dict[str, Any]) -> Image.Image | None:
    """The picture of a detection result, when the dictionary holds an image and boxes."""
    from mixkit.apps.appflow.steps.common import state_image
    from mixkit.apps.appflow.steps.drawing import draw_detections

    if state.get("boxes") is None or state.get("image") is None:
        return None
    masks = state.get("seg_masks") or []
    return draw_detections(state_image(state), _plain(state["boxes"]), state.get("labels") or [],
                           state.get("scores") or [], masks)


def write_outputs(state: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The JSON record of a run: text and numbers as they are, media as the paths of the files written, the
    drawn picture under "picture", and every file under "files"."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    record = {key: _write_value(key, value, directory, files) for key, value in state.items()}
    picture = draw_result(state)
    if picture is not None:
        record[PICTURE_KEY] = str(write_media(picture, directory, PICTURE_KEY))
        files.append(record[PICTURE_KEY])
    record["files"] = files
    return record
