"""Caption metrics: exactly the floats `pycocoevalcap.eval.COCOEvalCap` computes on the same files."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

pytest.importorskip("pycocoevalcap")
pytest.importorskip("pycocotools")
if shutil.which("java") is None:
    pytest.skip("caption scoring needs Java", allow_module_level=True)

from pycocoevalcap import eval as coco_eval  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from mixkit.eval import caption_score  # noqa: E402
from mixkit.eval.caption_score import CAPTION_METRICS, CaptionScoreError, score_captions, tokenize  # noqa: E402
from mixkit.eval.result_files import ResultFileError  # noqa: E402

REFERENCES = {
    1: ["A dog runs across the grass.", "a brown dog running in a park", "The dog is playing in a field!"],
    2: ["Two men ride bicycles down a street.", "people riding bikes on a city road", "cyclists on the street"],
    3: ["A plate of food with broccoli and rice.", "a meal of rice, broccoli and chicken", "food on a white plate"],
    4: ["A café with people sitting outside.", "people at tables outside a café", "an outdoor café in the sun"],
    5: ["A cat sleeping on a red couch.", "a grey cat asleep on the sofa", "the cat is lying on a couch"],
    6: ["A man holding an umbrella in the rain.", "a person with an umbrella on a rainy day", "rain and an umbrella"],
}
# Empty, punctuation-only, upper-case and non-ASCII captions are part of the comparison.
CAPTIONS = {
    1: "A dog running on grass.", 2: "", 3: "...!", 4: "PEOPLE AT A CAFÉ", 5: "a cat on a couch", 6: "ein Mann"
}


class _NoSpice:
    """COCOEvalCap always runs SPICE, which needs jars downloaded from the internet."""

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list]:
        return 0.0, [0.0] * len(gts)

    def method(self) -> str:
        return "SPICE"


def truth_json() -> dict:
    annotations = [
        {"image_id": i, "id": 10 * i + j, "caption": c} for i, caps in REFERENCES.items() for j, c in enumerate(caps)
    ]
    return {"images": [{"id": i} for i in REFERENCES], "annotations": annotations}


def results_json(ids=None) -> list[dict]:
    return [{"image_id": i, "caption": c} for i, c in CAPTIONS.items() if ids is None or i in ids]


def write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def reference_scores(tmp_path, results: list[dict], partial: bool) -> dict:
    """COCOEvalCap as its example (and LAVIS, for a subset of images) runs it."""
    coco = COCO(write(tmp_path, "gt.json", truth_json()))
    coco_results = coco.loadRes(write(tmp_path, "res.json", results))
    evaluator = coco_eval.COCOEvalCap(coco, coco_results)
    if partial:
        evaluator.params["image_id"] = coco_results.getImgIds()
    evaluator.evaluate()
    return {name: evaluator.eval[name] for name in CAPTION_METRICS}


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict[str, dict]:
    """COCOEvalCap's numbers on the full and on a partial results file.

    Starting METEOR's JVM takes seconds, so both runs share one METEOR process (it keeps no
    state between calls) and SPICE, whose jars come from the internet, is stubbed out.
    """
    meteor = coco_eval.Meteor()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coco_eval, "Spice", _NoSpice)
        patch.setattr(coco_eval, "Meteor", lambda: meteor)
        tmp_path = tmp_path_factory.mktemp("cocoevalcap")
        return {
            "full": reference_scores(tmp_path, results_json(), partial=False),
            "partial": reference_scores(tmp_path, results_json({1, 4, 5}), partial=True),
        }


def test_equal_to_cocoevalcap(expected) -> None:
    ours = score_captions(truth_json(), results_json())
    assert ours == expected["full"]  # exact float equality, key for key
    assert ours["CIDEr"] > 0 and ours["Bleu_1"] > 0


def test_partial_equal_to_cocoevalcap_on_the_subset(expected) -> None:
    ours = score_captions(truth_json(), results_json({1, 4, 5}), allow_partial=True)
    assert ours.pop("coverage") == {"scored": 3, "total": 6}
    assert ours == expected["partial"]


def test_all_line_breaks_become_spaces() -> None:
    # COCOEvalCap would tokenize "a\rb" as two lines and shift "c" onto the wrong image.
    captions = {1: ["a\rb", "x\u2028y"], 2: ["c\x0bd"], 3: ["e"]}
    assert tokenize(captions) == {1: ["a b", "x y"], 2: ["c d"], 3: ["e"]}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    caption_score.add_arguments(parser)
    return caption_score.run(parser.parse_args(argv))


def test_cli_with_spice_requested(tmp_path, capsys) -> None:
    gt = write(tmp_path, "gt.json", truth_json())
    results = write(tmp_path, "res.json", results_json({2, 3}))
    assert run_cli(["--annotations", gt, "--results", results, "--allow-partial", "--spice"]) == 0
    out = json.loads(capsys.readouterr().out)  # stdout holds the JSON object alone
    assert set(CAPTION_METRICS) <= set(out)
    assert out["coverage"] == {"scored": 2, "total": 6}
    if caption_score.spice_missing() is None:
        assert isinstance(out["SPICE"], float)
    else:
        assert out["SPICE"] is None and "SPICE needs" in out["skipped"]["SPICE"]


def test_cli_errors(tmp_path, capsys) -> None:
    gt = write(tmp_path, "gt.json", truth_json())
    results = write(tmp_path, "res.json", results_json({1}))
    assert run_cli(["--annotations", gt, "--results", results]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "5 ground-truth image_id(s) without a result" in err


def test_missing_java_fails_early(monkeypatch) -> None:
    monkeypatch.setattr(caption_score.shutil, "which", lambda name: None)
    with pytest.raises(CaptionScoreError, match="needs Java"):
        score_captions(truth_json(), results_json())


def test_image_without_reference() -> None:
    truth = truth_json()
    truth["images"].append({"id": 7})
    with pytest.raises(ResultFileError, match="without a reference caption"):
        score_captions(truth, results_json() + [{"image_id": 7, "caption": "x"}])
