"""VQA accuracy: expected values are derived by hand from the official evaluator's rules.

(The scorer was also checked once, outside this suite, against the unmodified official
GT-Vision-Lab/VQA evaluator on randomly generated hard cases.)
"""

from __future__ import annotations

import argparse
import json

import pytest

from mixkit.eval import vqa_score
from mixkit.eval.result_files import ResultFileError
from mixkit.eval.vqa_score import normalise_answer, question_accuracy, score_vqa, strip_punctuation


def make_vqa(items: list[tuple[list[str], str, str, str]]) -> tuple[dict, dict, list]:
    """(truth answers, prediction, question type, answer type) per question -> the three files."""
    questions, annotations, results = [], [], []
    for i, (answers, prediction, qtype, atype) in enumerate(items):
        qid = 100 + i
        questions.append({"question_id": qid, "image_id": i, "question": "?"})
        annotations.append({
            "question_id": qid, "image_id": i, "question_type": qtype, "answer_type": atype,
            "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)],
        })  # fmt: skip
        results.append({"question_id": qid, "answer": prediction})
    return {"questions": questions}, {"annotations": annotations}, results


def with_matches(n: int) -> list[str]:
    return ["dog"] * n + ["cat"] * (10 - n)


# Leave-one-out: with n matches, the 10-n subsets that leave out a non-match keep n matches and
# the n subsets that leave out a match keep n-1; each scores min(1, k/3).
@pytest.mark.parametrize(
    ("matches", "expected"),
    [(10, 1.0), (4, 1.0), (3, (7 * 1 + 3 * 2 / 3) / 10), (2, (8 * 2 / 3 + 2 * 1 / 3) / 10), (1, 0.3), (0, 0.0)],
)
def test_leave_one_out(matches: int, expected: float) -> None:
    assert question_accuracy("dog", with_matches(matches)) == pytest.approx(expected)


def test_three_matches_is_point_nine_two_is_point_six() -> None:
    assert round(100 * question_accuracy("dog", with_matches(3)), 2) == 90.0
    assert round(100 * question_accuracy("dog", with_matches(2)), 2) == 60.0


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        # Answers that disagree: truth and prediction are both normalised.
        ("The Dog.", with_matches(5), 1.0),
        ("a dog", with_matches(5), 1.0),
        ("dogs", with_matches(5), 0.0),
        ("2", ["two"] * 9 + ["three"], 1.0),
        ("none", ["0"] * 5 + ["1"] * 5, 1.0),
        ("dont", ["don't"] * 4 + ["no"] * 6, 1.0),
        ("  red,white\n", ["red, white"] * 4 + ["blue"] * 6, 1.0),
        # All ten identical: nothing but the whitespace clean-up, so case and digits matter.
        ("yes", ["yes"] * 10, 1.0),
        ("Yes", ["yes"] * 10, 0.0),
        ("yes.", ["yes"] * 10, 0.0),
        ("2", ["two"] * 10, 0.0),
        ("\tyes \n", ["yes"] * 10, 1.0),
        ("yes", ["yes\n"] * 9 + ["yes"], 1.0),  # identical once stripped
    ],
)
def test_normalisation_quirks(prediction: str, answers: list[str], expected: float) -> None:
    assert question_accuracy(prediction, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t-shirt", "t shirt"),  # mark not touching a space: replaced by a space
        ("t - shirt", "t  shirt"),  # touching a space: deleted
        ("1,000", "1000"),  # digit-comma-digit anywhere: every mark deleted
        ("1,2 (x)", "12 x"),
        ("x,y (z)", "x y z "),
        ("3.5", "3.5"),  # a period before a digit stays
        ("u.s.", "us"),
        ("." * 40 + "x", "." * 8 + "x"),  # at most 32 periods go (re.UNICODE passed as count)
        ("don't", "don't"),  # the apostrophe is not in the official list
    ],
)
def test_strip_punctuation(text: str, expected: str) -> None:
    assert strip_punctuation(text) == expected


def test_normalise_answer_words() -> None:
    assert normalise_answer("The Two Dogs") == "2 dogs"
    assert normalise_answer("an  apple,  Isnt") == "apple isn't"
    assert normalise_answer("Im") == "im"  # the map's capitalised keys never match after lower()


def test_score_vqa_aggregates() -> None:
    data = make_vqa([
        (with_matches(4), "dog", "what", "other"),
        (with_matches(2), "dog", "what", "other"),
        (["yes"] * 10, "Yes", "is the", "yes/no"),
    ])  # fmt: skip
    score = score_vqa(*data)
    assert score.per_question == {100: 100.0, 101: 60.0, 102: 0.0}
    assert score.overall == 53.33  # 100 * 1.6 / 3
    assert score.per_question_type == {"what": 80.0, "is the": 0.0}
    assert score.per_answer_type == {"other": 80.0, "yes/no": 0.0}
    assert score.counts == {"other": 2, "yes/no": 1}
    assert score.to_json() == {"overall": 53.33, "perQuestionType": {"what": 80.0, "is the": 0.0},
                               "perAnswerType": {"other": 80.0, "yes/no": 0.0}}  # fmt: skip


def test_rounding_is_python3_round() -> None:
    # 1 right of 800: 100 * 1 / 800 = 0.125 exactly; Python 3's round gives 0.12 (Python 2: 0.13).
    items = [(["yes"] * 10, "yes" if i == 0 else "no", "is", "yes/no") for i in range(800)]
    assert score_vqa(*make_vqa(items)).overall == 0.12


def test_partial_results() -> None:
    questions, annotations, results = make_vqa([(with_matches(4), "dog", "what", "other")] * 3)
    with pytest.raises(ResultFileError, match="2 ground-truth question_id"):
        score_vqa(questions, annotations, results[:1])
    score = score_vqa(questions, annotations, results[:1], allow_partial=True)
    assert score.to_json()["coverage"] == {"scored": 1, "total": 3}
    assert score.overall == 100.0


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    vqa_score.add_arguments(parser)
    return vqa_score.run(parser.parse_args(argv))


def write_files(tmp_path, data) -> list[str]:
    paths = []
    for name, content in zip(("q.json", "a.json", "r.json"), data):
        (tmp_path / name).write_text(json.dumps(content))
        paths.append(str(tmp_path / name))
    return paths


def test_cli_scores_and_writes_per_question(tmp_path, capsys) -> None:
    q, a, r = write_files(tmp_path, make_vqa([(with_matches(1), "dog", "what", "other")]))
    out = tmp_path / "per_question.json"
    assert run_cli(["--questions", q, "--annotations", a, "--results", r, "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == {"overall": 30.0, "perQuestionType": {"what": 30.0},
                                                   "perAnswerType": {"other": 30.0}}  # fmt: skip
    assert json.loads(out.read_text()) == [{"question_id": 100, "accuracy": 30.0}]


def test_cli_error_is_one_line_and_code_2(tmp_path, capsys) -> None:
    q, a, r = write_files(tmp_path, make_vqa([(with_matches(1), "dog", "what", "other")]))
    (tmp_path / "r.json").write_text('[{"question_id": 100, "answer": 3}]')
    assert run_cli(["--questions", q, "--annotations", a, "--results", r]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert f"{r}: record 0: field 'answer' must be str" in captured.err
