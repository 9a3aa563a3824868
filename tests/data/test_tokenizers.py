"""Tiny trained tokenizers: special-token ids, reload round trips, padding, determinism."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer, T5Tokenizer

from mixkit.data.tokenizers import (
    IMAGE_TOKEN,
    newline_token_id,
    train_bert_tokenizer,
    train_opt_tokenizer,
    train_t5_tokenizer,
)

_SUBJECTS = ["a man", "two dogs", "the red car", "a small cat", "three people", "an old tree", "a yellow bus"]
_VERBS = ["sits on", "runs along", "stands near", "looks at", "is parked by", "walks past"]
_PLACES = ["the beach", "a wooden table", "the busy street", "a green field", "the river", "a white wall"]


def _corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_PLACES)}."
        lines.append(sentence if rng.random() < 0.7 else f"Question: what {rng.choice(_VERBS)} it?\nAnswer: {sentence}")
    return lines


SAMPLES = ["a man sits on the beach.", "Question: what is it?\nAnswer: two dogs", "A Cat looks at the river"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, Path]]:
    root = tmp_path_factory.mktemp("tokenizers")
    texts = _corpus()
    return {
        "opt": (train_opt_tokenizer(texts, root / "opt", vocab_size=400), root / "opt"),
        "t5": (train_t5_tokenizer(texts, root / "t5", vocab_size=300), root / "t5"),
        "bert": (train_bert_tokenizer(texts, root / "bert", vocab_size=300), root / "bert"),
    }


@pytest.mark.parametrize(("name", "cls"), [("opt", GPT2Tokenizer), ("t5", T5Tokenizer), ("bert", BertTokenizer)])
def test_reload_gives_same_class_and_ids(trained, name: str, cls: type) -> None:
    tokenizer, directory = trained[name]
    reloaded = AutoTokenizer.from_pretrained(str(directory))
    assert type(reloaded) is cls
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded(SAMPLES)["input_ids"] == tokenizer(SAMPLES)["input_ids"]
    assert reloaded.all_special_ids == tokenizer.all_special_ids


def test_opt_special_tokens_and_bos(trained) -> None:
    tokenizer, directory = trained["opt"]
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ["<s>", "<pad>", "</s>", "<unk>"]}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (2, 2)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (1, 3)
    # OPT prepends </s> and appends nothing; the reloaded tokenizer must too, since the
    # flag itself is not saved by transformers 5 (the post-processor in tokenizer.json is).
    for tok in (tokenizer, AutoTokenizer.from_pretrained(str(directory))):
        ids_ = tok("a man sits")["input_ids"]
        assert ids_[0] == 2 and ids_[-1] != 2 and 2 not in ids_[1:]
        assert tok("a man sits", add_special_tokens=False)["input_ids"] == ids_[1:]


def test_opt_newline_is_one_token(trained) -> None:
    tokenizer, _ = trained["opt"]
    newline = newline_token_id(tokenizer)
    assert tokenizer.decode([newline]) == "\n"
    assert newline in tokenizer("what is it?\nAnswer")["input_ids"]
    assert tokenizer.decode(tokenizer("a dog\nruns", add_special_tokens=False)["input_ids"]) == "a dog\nruns"


def test_newline_helper_rejects_tokenizers_without_a_newline_token(trained) -> None:
    tokenizer, _ = trained["t5"]  # T5's whitespace pre-tokeniser drops "\n" entirely
    with pytest.raises(ValueError, match="expected exactly one"):
        newline_token_id(tokenizer)


def test_t5_special_tokens_and_eos(trained) -> None:
    tokenizer, _ = trained["t5"]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.bos_token_id is None
    assert not any("extra_id" in token for token in tokenizer.get_vocab())
    for text in SAMPLES:
        ids = tokenizer(text)["input_ids"]
        assert ids[-1] == 1 and 1 not in ids[:-1]


@pytest.mark.parametrize("name", ["opt", "t5"])
def test_image_token_is_last_and_never_split(trained, name: str) -> None:
    tokenizer, directory = trained[name]
    reloaded = AutoTokenizer.from_pretrained(str(directory))
    for tok in (tokenizer, reloaded):
        assert tok.image_token == IMAGE_TOKEN
        assert tok.image_token_id == len(tok) - 1 == max(tok.get_vocab().values())
        ids = tok(IMAGE_TOKEN * 3 + "a man", add_special_tokens=False)["input_ids"]
        assert ids[:3] == [tok.image_token_id] * 3 and tok.image_token_id not in ids[3:]


def test_bert_special_tokens_dec_and_lowercase(trained) -> None:
    tokenizer, _ = trained["bert"]
    names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.convert_tokens_to_ids(names) == [0, 1, 2, 3, 4]
    assert tokenizer.pad_token_id == 0 and tokenizer.cls_token_id == 2 and tokenizer.sep_token_id == 3
    # [DEC] is appended after the trained vocabulary, as add_special_tokens does on bert-base-uncased.
    assert tokenizer.bos_token == "[DEC]" and tokenizer.bos_token_id == len(tokenizer) - 1
    ids = tokenizer("A Man Sits")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3
    assert ids == tokenizer("a man sits")["input_ids"]
    assert tokenizer.unk_token_id not in ids


def test_bert_vocab_has_wordpiece_continuations(trained) -> None:
    tokenizer, _ = trained["bert"]
    vocab = tokenizer.get_vocab()
    assert any(token.startswith("##") and len(token) > 3 for token in vocab)  # merged continuation pieces
    assert not any(ord(char) > 0xFFFF for token in vocab for char in token)  # no private-use markers leak
    ids = tokenizer("three people walk past the busy street", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == "three people walk past the busy street"


def test_bert_truncates_on_the_right(trained) -> None:
    tokenizer, _ = trained["bert"]
    full = tokenizer("a man sits on the beach")["input_ids"]
    cut = tokenizer("a man sits on the beach", truncation=True, max_length=4)["input_ids"]
    assert cut == full[:3] + [3]


@pytest.mark.parametrize("name", ["opt", "t5", "bert"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side_per_call(trained, name: str, side: str) -> None:
    tokenizer, _ = trained[name]
    short, long = "a dog", "three people walk past the busy street"
    batch = tokenizer([short, long], padding=True, padding_side=side)
    unpadded = tokenizer(short)["input_ids"]
    n_pad = len(batch["input_ids"][1]) - len(unpadded)
    assert n_pad > 0
    pads, mask = [tokenizer.pad_token_id] * n_pad, [0] * n_pad
    if side == "left":
        assert batch["input_ids"][0] == pads + unpadded and batch["attention_mask"][0][:n_pad] == mask
    else:
        assert batch["input_ids"][0] == unpadded + pads and batch["attention_mask"][0][-n_pad:] == mask
    assert tokenizer.padding_side == "right"  # the per-call argument left the tokenizer unchanged


@pytest.mark.parametrize("train", [train_opt_tokenizer, train_t5_tokenizer, train_bert_tokenizer])
def test_training_is_deterministic(tmp_path: Path, train) -> None:
    texts = _corpus(150, seed=1)
    first = train(texts, tmp_path / "a", vocab_size=300)
    second = train(texts, tmp_path / "b", vocab_size=300)
    assert first.get_vocab() == second.get_vocab()
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_vocab_size_is_respected_and_validated(tmp_path: Path) -> None:
    tokenizer = train_opt_tokenizer(_corpus(), tmp_path / "opt", vocab_size=300)
    assert len(tokenizer) == 300 + 1  # trained vocabulary + <image>
    with pytest.raises(ValueError, match="vocab_size"):
        train_opt_tokenizer(_corpus(), tmp_path / "small", vocab_size=100)
    with pytest.raises(ValueError, match="zero texts"):
        train_bert_tokenizer([], tmp_path / "empty")


def test_word_level_t5_tokenizer_keeps_words_whole(tmp_path) -> None:
    from mixkit.data.tokenizers import word_level_t5_tokenizer

    texts = ["a small purple circle on the left", "two large squares"]
    tokenizer = word_level_t5_tokenizer(texts, tmp_path)
    ids = tokenizer("a small purple circle").input_ids
    assert len(ids) == 5 and ids[-1] == tokenizer.eos_token_id  # one piece per word, then </s>
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    unseen = tokenizer("lefts").input_ids  # an unseen word of known letters falls back to pieces, not <unk>
    assert tokenizer.unk_token_id not in unseen and len(unseen) > 2
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("a small purple circle").input_ids == ids
