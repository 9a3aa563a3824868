"""VQA accuracy, equal digit for digit to the official GT-Vision-Lab/VQA evaluator.

Written from the rules of the official `vqaEval.py` (latest revision, "Fixed processing answers
bug"), run under Python 3 as LAVIS and PaddleMIX run their copies. The rules, quirks included:

* Every answer (truth and prediction) gets "\\n" and "\\t" replaced by spaces and is stripped.
* Only when a question's ten truth answers are **not all identical** (after that strip) are the
  truth answers *and the prediction* normalised (punctuation, then number words, articles and
  contractions). When all ten agree, the prediction must equal them character for character:
  "Yes" scores 0 against ten "yes".
* Punctuation: each mark in `_PUNCT` is deleted if it touches a space anywhere in the answer, or
  if the answer holds a digit-comma-digit anywhere, else replaced by a space. Then a "." not
  followed by a digit is deleted, at most 32 of them (the tool passes `re.UNICODE`, which is 32,
  as `sub`'s `count`). The period regex's `(?!<=\\d)` is a lookahead typo, so it does nothing.
* Words: lower-case, whitespace split, number words "none".."ten" -> digits, drop "a", "an",
  "the", then the contraction map ("dont" -> "don't"; its capitalised keys never match).
* Accuracy of a question: for each truth answer left out in turn, min(1, matches among the
  other nine / 3); the mean of those. So 3+ matches give 1, 2 give 0.6, 1 gives 0.3.
* Reported numbers are percentages rounded with `round(100 * x, 2)`; averages are plain
  left-to-right float sums, as in the tool.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixkit.eval import result_files as rf
from mixkit.eval.result_files import Coverage, ResultFileError

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # the official tool's accidental `count` argument (32)
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# The official map, kept whole (capitalised keys included) so it can be compared line by line.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip


# ---------------------------------------------------------------- answer normalisation


def clean_whitespace(answer: str) -> str:
    """The step every answer gets: newlines and tabs become spaces, then strip."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def strip_punctuation(text: str) -> str:
    """The official `processPunctuation`; the conditions look at the input, not the output."""
    glue_all = _COMMA_STRIP.search(text) is not None
    out = text
    for mark in _PUNCT:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if glue_all or touches_space else " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def normalise_words(text: str) -> str:
    """The official `processDigitArticle`: lower case, digits, no articles, contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalise_answer(answer: str) -> str:
    """Full normalisation, as applied to questions whose truth answers disagree."""
    return normalise_words(strip_punctuation(answer))


# ---------------------------------------------------------------- accuracy


def _sum(values: Sequence[float]) -> float:
    """Left-to-right float sum: Python 3.12's `sum` compensates rounding, the tool's does not."""
    total = 0
    for value in values:
        total = total + value
    return total


def question_accuracy(prediction: str, truth_answers: Sequence[str]) -> float:
    """Leave-one-out accuracy of one prediction, a fraction in [0, 1]."""
    truths = [clean_whitespace(a) for a in truth_answers]
    predicted = clean_whitespace(prediction)
    if len(set(truths)) > 1:
        truths = [normalise_answer(a) for a in truths]
        predicted = normalise_answer(predicted)
    hits = [t == predicted for t in truths]
    matches = sum(hits)
    # min(1, n / 3) with n the matches among the others, exactly as the tool computes it.
    per_left_out = [min(1, float(matches - hit) / 3) for hit in hits]
    return _sum(per_left_out) / len(per_left_out)


def percent(values: Sequence[float]) -> float:
    """The tool's `round(100 * float(sum(xs)) / len(xs), 2)`, operation order included."""
    return round(100 * float(_sum(values)) / len(values), 2)


@dataclass(frozen=True)
class VqaScore:
    """Percentages rounded to 2 decimals, as the official tool reports them."""

    overall: float
    per_question_type: dict[str, float]
    per_answer_type: dict[str, float]
    per_question: dict[Hashable, float]
    counts: dict[str, int]  # scored questions per answer type
    coverage: Coverage
    partial: bool = False  # allow_partial was set: `to_json` reports coverage

    def to_json(self) -> dict:
        out: dict = {
            "overall": self.overall,
            "perQuestionType": self.per_question_type,
            "perAnswerType": self.per_answer_type,
        }
        if self.partial:
            out["coverage"] = self.coverage.to_json()
        return out


def _grouped_percent(groups: dict[str, list[float]]) -> dict[str, float]:
    return {name: percent(values) for name, values in groups.items()}


def score_vqa(questions: dict, annotations: dict, results: list, allow_partial: bool = False) -> VqaScore:
    """Score parsed VQA results against parsed VQAv2-format questions and annotations.

    Raises `ResultFileError` for malformed inputs, duplicate ids, or (without `allow_partial`)
    results whose question ids differ from the annotations'.
    """
    return _score_sources(questions, annotations, results, allow_partial, ("questions", "annotations", "results"))


def _score_sources(
    questions: dict, annotations: dict, results: list, allow_partial: bool, sources: tuple[str, str, str]
) -> VqaScore:
    """`score_vqa` with the names (file paths, for the CLI) that error messages use."""
    asked = rf.validate_vqa_questions(questions, sources[0])
    truth = rf.validate_vqa_annotations(annotations, sources[1])
    rf.check_questions_match(asked, truth, sources[0])
    return score_validated_vqa(truth, results, allow_partial, sources[2])


def score_validated_vqa(truth: dict[Hashable, dict], results: list, allow_partial: bool = False,
                        source: str = "results") -> VqaScore:
    """Score results against annotations already validated (`validate_vqa_annotations`, indexed by question id)
    and matched to their questions: an evaluation checks its inputs before generating and not again here."""
    predicted = rf.validate_vqa_results(results, source)
    ids, coverage = rf.match_ids(predicted, list(truth), allow_partial=allow_partial, source=source,
                                 id_name="question_id")
    return _score_ids(ids, truth, predicted, coverage, allow_partial)


def _score_ids(
    ids: list[Hashable], truth: dict, predicted: dict, coverage: Coverage, allow_partial: bool
) -> VqaScore:
    accuracies: list[float] = []
    by_question_type: dict[str, list[float]] = {}
    by_answer_type: dict[str, list[float]] = {}
    per_question: dict[Hashable, float] = {}
    for qid in ids:
        ann = truth[qid]
        acc = question_accuracy(predicted[qid], [a["answer"] for a in ann["answers"]])
        accuracies.append(acc)
        by_question_type.setdefault(ann["question_type"], []).append(acc)
        by_answer_type.setdefault(ann["answer_type"], []).append(acc)
        per_question[qid] = round(100 * acc, 2)
    return VqaScore(
        overall=percent(accuracies),
        per_question_type=_grouped_percent(by_question_type),
        per_answer_type=_grouped_percent(by_answer_type),
        per_question=per_question,
        counts={name: len(values) for name, values in by_answer_type.items()},
        coverage=coverage,
        partial=allow_partial,
    )


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mixkit score vqa`."""
    parser.add_argument("--questions", required=True, type=Path, help="VQAv2 questions JSON")
    parser.add_argument("--annotations", required=True, type=Path, help="VQAv2 annotations JSON")
    parser.add_argument("--results", required=True, type=Path, help='results JSON: [{"question_id", "answer"}]')
    parser.add_argument("--output", type=Path, help="write per-question accuracies (percent) to this JSON file")
    parser.add_argument(
        "--allow-partial", action="store_true", help="score only the questions that have a result; report coverage"
    )


def _load_and_score(args: argparse.Namespace) -> VqaScore:
    paths = (args.questions, args.annotations, args.results)
    questions, annotations, results = (rf.load_json(p) for p in paths)
    return _score_sources(questions, annotations, results, args.allow_partial, tuple(str(p) for p in paths))


def _write_per_question(path: Path, score: VqaScore) -> None:
    # A list keeps integer ids integers, which JSON object keys would not.
    rows = [{"question_id": qid, "accuracy": acc} for qid, acc in score.per_question.items()]
    path.write_text(json.dumps(rows) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """`mixkit score vqa`: one JSON object on stdout; errors as one line on stderr, code 2."""
    try:
        score = _load_and_score(args)
        if args.output is not None:
            _write_per_question(args.output, score)
    except (ResultFileError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(score.to_json()))
    return 0
