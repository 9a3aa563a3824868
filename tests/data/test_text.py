"""LAVIS caption/question cleaning rules; every expected string is worked out by hand from the rules."""

from __future__ import annotations

import pytest

from mixkit.data.text import CaptionProcessor, QuestionProcessor, clean_caption, clean_question


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # lowercase
        ("A Dog On The Beach", "a dog on the beach"),
        # each of . ! " ( ) * # : ; ~ becomes a space, then runs of spaces collapse
        ('Wow! A "big" (red) car.', "wow a big red car"),
        ("a*b#c:d;e~f", "a b c d e f"),
        # kept: ? , ' - and digits
        ("Is it a dog's toy, 2-3 cm?", "is it a dog's toy, 2-3 cm?"),
        # whitespace runs (spaces, tabs, newlines) collapse to one space; ends are stripped
        ("  a   man \t\n riding   a horse  ", "a man riding a horse"),
        # a trailing newline is removed
        ("a cat\n", "a cat"),
        # a single newline or tab between words is not a run, so it survives (a LAVIS quirk)
        ("a\ncat", "a\ncat"),
        ("a\tcat", "a\tcat"),
        ("", ""),
    ],
)
def test_clean_caption(raw: str, expected: str) -> None:
    assert clean_caption(raw) == expected


def test_clean_caption_truncates_to_max_words() -> None:
    assert clean_caption("One two three four five", max_words=3) == "one two three"
    assert clean_caption("one two three", max_words=3) == "one two three"
    # punctuation turned into spaces does not create extra words
    assert clean_caption("one. two. three. four.", max_words=2) == "one two"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("What Color Is The Car?", "what color is the car?"),
        # punctuation is deleted (not replaced by a space) and `?` stays
        ('What is "this" (thing)?!', "what is this thing?"),
        ("a.b:c", "abc"),
        # only trailing spaces are stripped; inner runs and leading spaces stay
        ("  how   many dogs?   ", "  how   many dogs?"),
        # newlines are left alone
        ("what is\nit?\n", "what is\nit?\n"),
    ],
)
def test_clean_question(raw: str, expected: str) -> None:
    assert clean_question(raw) == expected


def test_clean_question_truncates_to_max_words() -> None:
    assert clean_question("What is the man holding in his hand?", max_words=4) == "what is the man"


def test_caption_processor_prepends_prompt_uncleaned() -> None:
    processor = CaptionProcessor(prompt="a photo of ", max_words=2)
    assert processor("Two Dogs. Running fast!") == "a photo of two dogs"
    assert CaptionProcessor()("A Cat.") == "a cat"


def test_question_processor() -> None:
    assert QuestionProcessor(max_words=3)("Where is the cat sitting?") == "where is the"


@pytest.mark.parametrize("factory", [lambda: CaptionProcessor(max_words=0), lambda: QuestionProcessor(max_words=-1)])
def test_max_words_must_be_positive(factory) -> None:
    with pytest.raises(ValueError):
        factory()
    with pytest.raises(ValueError):
        clean_caption("x", max_words=0)
