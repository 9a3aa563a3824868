"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr, optionally SPICE), equal to pycocoevalcap.

The numbers come from pycocoevalcap's own tokenizer and scorers, called the way
`pycocoevalcap.eval.COCOEvalCap` calls them, with images in ground-truth file order and each
image's references in file order (the order `pycocotools.COCO` gives; CIDEr and BLEU sum floats
in it). What the wrapper adds:

* Checked inputs (`result_files`), Java checked up front, SPICE skipped with a reason when its
  Stanford CoreNLP jars are absent (pycocoevalcap would try to download them mid-run).
* Line breaks. COCOEvalCap replaces "\\n" in captions by a space, but Java's PTB tokenizer also
  ends a line at "\\r", "\\v", "\\f", U+2028 and U+2029; such a caption shifts every later caption
  onto the wrong image, silently. All of these become spaces here.
* Empty and punctuation-only captions are scored, not rejected: the tokenizer turns them into
  empty strings and the scorers give them what COCOEvalCap gives them (zero overlap).
* Scores are returned as plain Python floats (fractions, not percentages).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import re
import shutil
import sys
from collections.abc import Hashable
from pathlib import Path

from mixkit.eval import result_files as rf
from mixkit.eval.result_files import ResultFileError

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
# Characters Java's PTBTokenizer (-preserveLines) treats as line ends, besides "\n".
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\u2028\u2029]")
_SPICE_JARS = ("spice-1.0.jar", "lib/stanford-corenlp-3.6.0.jar", "lib/stanford-corenlp-3.6.0-models.jar")


class CaptionScoreError(RuntimeError):
    """The caption scorers cannot run here (no Java, no pycocoevalcap)."""


def check_environment() -> None:
    """Fail before any work if Java or pycocoevalcap is missing: every metric needs both."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise CaptionScoreError("caption scoring needs pycocoevalcap: pip install pycocoevalcap") from None
    if shutil.which("java") is None:
        raise CaptionScoreError(
            "caption scoring needs Java on PATH (pycocoevalcap's PTB tokenizer and METEOR are Java programs)"
        )


def spice_missing() -> str | None:
    """Why SPICE cannot run, or None when its jars are all present."""
    import pycocoevalcap.spice

    spice_dir = Path(pycocoevalcap.spice.__file__).parent
    missing = [name for name in _SPICE_JARS if not (spice_dir / name).is_file()]
    if not missing:
        return None
    return (
        f"SPICE needs {', '.join(str(spice_dir / m) for m in missing)} "
        "(python -m pycocoevalcap.spice.get_stanford_models downloads the CoreNLP jars)"
    )


def tokenize(captions: dict[Hashable, list[str]]) -> dict[Hashable, list[str]]:
    """PTB-tokenize, lower-case and drop punctuation, as COCOEvalCap does."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    one_line = {key: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in caps] for key, caps in captions.items()}
    tokenized = PTBTokenizer().tokenize(one_line)
    # The tokenizer pairs output lines with ids by position; a count mismatch means misalignment.
    if any(len(tokenized.get(key, [])) != len(caps) for key, caps in captions.items()):
        raise CaptionScoreError("PTB tokenizer output does not line up with the input captions")
    return tokenized


@functools.lru_cache(maxsize=1)
def _meteor() -> object:
    """One METEOR Java process per Python process: starting it takes seconds, and it keeps no
    state between calls (each `compute_score` sends all its statistics and reads the result)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _scorers(spice: bool) -> list[tuple[object, tuple[str, ...]]]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scorers: list[tuple[object, tuple[str, ...]]] = [
        (Bleu(4), CAPTION_METRICS[:4]),
        (_meteor(), ("METEOR",)),
        (Rouge(), ("ROUGE_L",)),
        (Cider(), ("CIDEr",)),
    ]
    if spice:
        from pycocoevalcap.spice.spice import Spice

        scorers.append((Spice(), ("SPICE",)))
    return scorers


def compute_metrics(references: dict[Hashable, list[str]], captions: dict[Hashable, str], spice: bool) -> dict:
    """Corpus scores of `captions` (one per image) against `references`, same keys, same order."""
    gts = tokenize(references)
    res = tokenize({key: [caption] for key, caption in captions.items()})
    scores: dict[str, float] = {}
    for scorer, names in _scorers(spice):
        # BLEU prints its statistics to stdout, which must carry only the CLI's JSON.
        with contextlib.redirect_stdout(io.StringIO()):
            corpus, _per_image = scorer.compute_score(gts, res)
        values = corpus if len(names) > 1 else [corpus]
        scores.update({name: float(value) for name, value in zip(names, values)})
    return scores


def _references(truth: dict[Hashable, list[dict]], ids: list[Hashable], source: str) -> dict[Hashable, list[str]]:
    """Reference captions of the scored images; every scored image needs at least one."""
    empty = [i for i in ids if not truth[i]]
    if empty:
        raise ResultFileError(f"{source}: {len(empty)} image(s) without a reference caption (e.g. {empty[0]!r})")
    return {i: [ann["caption"] for ann in truth[i]] for i in ids}


def score_captions(gt: dict, results: list, allow_partial: bool = False, spice: bool = False) -> dict:
    """Score parsed caption results against a parsed COCO-captions ground truth.

    Returns {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} as fractions; with `spice`, also
    "SPICE" (None plus a "skipped" reason when its jars are absent); with `allow_partial`,
    also "coverage".
    """
    return _score_sources(gt, results, allow_partial, spice, ("annotations", "results"))


def _score_sources(gt: dict, results: list, allow_partial: bool, spice: bool, sources: tuple[str, str]) -> dict:
    """`score_captions` with the names (file paths, for the CLI) that error messages use."""
    check_environment()
    truth = rf.validate_caption_truth(gt, sources[0])
    captions = rf.validate_caption_results(results, sources[1])
    ids, coverage = rf.match_ids(
        captions, list(truth), allow_partial=allow_partial, source=sources[1], id_name="image_id"
    )
    references = _references(truth, ids, sources[0])
    skip_reason = spice_missing() if spice else None
    out: dict = compute_metrics(references, {i: captions[i] for i in ids}, spice and skip_reason is None)
    if skip_reason is not None:
        out["SPICE"] = None
        out["skipped"] = {"SPICE": skip_reason}
    if allow_partial:
        out["coverage"] = coverage.to_json()
    return out


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mixkit score caption`."""
    parser.add_argument("--annotations", required=True, type=Path, help="COCO-captions ground-truth JSON")
    parser.add_argument("--results", required=True, type=Path, help='results JSON: [{"image_id", "caption"}]')
    parser.add_argument(
        "--allow-partial", action="store_true", help="score only the images that have a result; report coverage"
    )
    parser.add_argument("--spice", action="store_true", help="also compute SPICE (needs its CoreNLP jars)")


def run(args: argparse.Namespace) -> int:
    """`mixkit score caption`: one JSON object on stdout; errors as one line on stderr, code 2."""
    try:
        check_environment()
        gt, results = rf.load_json(args.annotations), rf.load_json(args.results)
        scores = _score_sources(gt, results, args.allow_partial, args.spice, (str(args.annotations), str(args.results)))
    except (ResultFileError, CaptionScoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(scores))
    return 0

