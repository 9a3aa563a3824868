"""Catalogue of the standard datasets: where their files come from and where they go.

Every standard set lives in one folder, ``$MIXKIT_HOME/datasets/<name>/``, laid out as::

    annotations/<file>.json     LAVIS annotation files (and VQAv2's official ones)
    images/<folder>/...         the extracted image archives (COCO train2014/, val2014/,
                                test2015/; Visual Genome VG_100K/, VG_100K_2/)

The ``image`` field of a LAVIS record is relative to ``images/`` (e.g.
``val2014/COCO_val2014_000000391895.jpg``), so ``images/`` is the image root.

URLs and md5 sums are the ones in LAVIS (``lavis/configs/datasets/{coco,vg}/*.yaml``
and ``lavis/datasets/download_scripts/download_{coco,vg}.py``). Where LAVIS gives no
checksum the field is ``None`` and the download is not verified. LAVIS's comment for
test2015.zip repeats test2014's md5, so that value is not trusted and left out here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

_LAVIS = "https://storage.googleapis.com/sfr-vision-language-research"
_COCO_ZIPS = "http://images.cocodataset.org/zips"
_VG_ZIPS = "https://cs.stanford.edu/people/rak248/VG_100K_2"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its URL, where it goes in the dataset folder, its checksum if known.

    For an archive, `target` is the folder its extraction creates (relative to the
    dataset folder): the archive is only needed while that folder is missing.
    """

    url: str
    target: str
    md5: str | None = None
    sha256: str | None = None
    archive: bool = False

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


@dataclass(frozen=True)
class DatasetSource:
    """A standard dataset: its task, annotation files per split and image archives."""

    name: str
    task: str  # "caption" or "vqa"
    annotations: dict[str, tuple[RemoteFile, ...]]  # split -> files, records files first
    images: dict[str, tuple[RemoteFile, ...]]  # split -> image archives it needs
    # VQA eval: the official VQAv2 files (by target) that the scorer reads, per split.
    vqa_question_file: dict[str, str] = field(default_factory=dict)
    vqa_annotation_file: dict[str, str] = field(default_factory=dict)
    # VQA: the candidate answers file LAVIS ranks against, per split.
    answer_list: dict[str, str] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.annotations)

    def record_files(self, split: str) -> tuple[RemoteFile, ...]:
        """The annotation files holding the split's records (not the scorer's extra files)."""
        extras = {self.vqa_question_file.get(split), self.vqa_annotation_file.get(split),
                  self.answer_list.get(split)}
        return tuple(f for f in self.annotations[split] if f.target not in extras)


def _ann(path: str, md5: str | None = None) -> RemoteFile:
    """A LAVIS-hosted annotation file stored under ``annotations/`` by its own name."""
    return RemoteFile(f"{_LAVIS}/{path}", "annotations/" + path.rsplit("/", 1)[1], md5=md5)


def _zip(base: str, name: str, folder: str, md5: str | None = None) -> RemoteFile:
    return RemoteFile(f"{base}/{name}", f"images/{folder}", md5=md5, archive=True)


_COCO_TRAIN = _zip(_COCO_ZIPS, "train2014.zip", "train2014", md5="0da8c0bd3d6becc4dcb32757491aca88")
_COCO_VAL = _zip(_COCO_ZIPS, "val2014.zip", "val2014", md5="a3d79f5ed8d289b7a7554ce06a5782b3")
_COCO_TEST2015 = _zip(_COCO_ZIPS, "test2015.zip", "test2015")
_VQAV2 = "LAVIS/datasets/vqav2"
_ANSWER_LIST_VAL = _ann(f"{_VQAV2}/answer_list.json")
_ANSWER_LIST_TEST = _ann("datasets/answer_list.json")

SOURCES: dict[str, DatasetSource] = {
    "coco_caption": DatasetSource(
        name="coco_caption",
        task="caption",
        # Karpathy's train split draws from train2014 and val2014; its 5k val and
        # 5k test images all come from val2014.
        annotations={
            "train": (_ann("datasets/coco_karpathy_train.json", "aa31ac474cf6250ebb81d18348a07ed8"),),
            "val": (_ann("datasets/coco_karpathy_val.json", "b273847456ef5580e33713b1f7de52a0"),),
            "test": (_ann("datasets/coco_karpathy_test.json", "3ff34b0ef2db02d01c37399f6a2a6cd1"),),
        },
        images={"train": (_COCO_TRAIN, _COCO_VAL), "val": (_COCO_VAL,), "test": (_COCO_VAL,)},
    ),
    "vg_caption": DatasetSource(
        name="vg_caption",
        task="caption",
        annotations={"train": (_ann("LAVIS/datasets/visual_genome/vg_caption.json"),)},
        images={"train": (_zip(_VG_ZIPS, "images.zip", "VG_100K"), _zip(_VG_ZIPS, "images2.zip", "VG_100K_2"))},
    ),
    "coco_vqa": DatasetSource(
        name="coco_vqa",
        task="vqa",
        # LAVIS trains VQAv2 on its train and val questions together.
        annotations={
            "train": (_ann("datasets/vqa_train.json"), _ann("datasets/vqa_val.json")),
            # LAVIS's yaml lists these URLs and storage names in different orders;
            # here each file keeps its own name.
            "val": (
                _ann(f"{_VQAV2}/vqa_val_eval.json"),
                _ANSWER_LIST_VAL,
                _ann(f"{_VQAV2}/v2_OpenEnded_mscoco_val2014_questions.json"),
                _ann(f"{_VQAV2}/v2_mscoco_val2014_annotations.json"),
            ),
            "test": (_ann("datasets/vqa_test.json"), _ANSWER_LIST_TEST),
        },
        images={"train": (_COCO_TRAIN, _COCO_VAL), "val": (_COCO_VAL,), "test": (_COCO_TEST2015,)},
        vqa_question_file={"val": "annotations/v2_OpenEnded_mscoco_val2014_questions.json"},
        vqa_annotation_file={"val": "annotations/v2_mscoco_val2014_annotations.json"},
        answer_list={"val": _ANSWER_LIST_VAL.target, "test": _ANSWER_LIST_TEST.target},
    ),
}


def source_names() -> list[str]:
    return sorted(SOURCES)


def get_source(name: str) -> DatasetSource:
    """The catalogue entry for `name`; an unknown name gets "did you mean"."""
    if name in SOURCES:
        return SOURCES[name]
    message = f"unknown standard dataset {name!r}; known: {', '.join(source_names())}"
    close = difflib.get_close_matches(name, source_names(), n=3, cutoff=0.6)
    if close:
        message += f"; did you mean {' or '.join(close)}?"
    raise KeyError(message)
