"""Per-record rules: LAVIS's integer image id (and its one error), VQA answer weights."""

from __future__ import annotations

import pytest

from mixkit.data.records import answer_weights, lavis_image_id


@pytest.mark.parametrize(("record", "expected"), [
    ({"image": "val2014/COCO_val2014_000000391895.jpg", "image_id": 7}, 7),  # an int id wins over the file name
    ({"image": "x.jpg", "image_id": "391895"}, 391895),  # a string of digits
    ({"image": "val2014/COCO_val2014_000000391895.jpg"}, 391895),  # coco_karpathy_test.json: no id
    ({"image": "images/train/shapes_train_000004.jpg", "image_id": "shapes_4"}, 4),  # a non-numeric id
    ({"image": "flickr/1000092795.jpg"}, 1000092795),  # no "_": the whole stem
])
def test_lavis_image_id(record: dict, expected: int) -> None:
    assert lavis_image_id(record, 0) == expected


@pytest.mark.parametrize("record", [
    {"image": "photos/cat.jpg"},
    {"image": "photos/cat_x.jpg", "image_id": "cat"},
    {"image": "photos/cat.jpg", "image_id": True},  # a bool is not an id
    {"image": "photos/cat_².jpg"},  # str.isdigit() would accept "²", int() would not
])
def test_lavis_image_id_without_a_number_names_the_record_and_file(record: dict) -> None:
    with pytest.raises(ValueError) as caught:
        lavis_image_id(record, 3)
    assert str(caught.value) == f"record 3: no integer image_id, and {record['image']!r} does not end in _<number>"


def test_answer_weights_count_over_total() -> None:
    answers, weights = answer_weights(["a", "a", "b"])
    assert answers == ["a", "b"]
    assert weights == pytest.approx([2 / 3, 1 / 3])
