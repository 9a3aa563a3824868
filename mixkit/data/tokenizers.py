"""Tiny real tokenizers for tests and demos, trained offline with the `tokenizers` library.

Each trainer learns a vocabulary on the given texts with the same normaliser and
pre-tokeniser as the `transformers` class it imitates, then builds that class from the
learned vocabulary (so the pipeline is exactly the one `from_pretrained` rebuilds) and
saves it. Special-token ids follow the real checkpoints:

- OPT (byte-level BPE, `GPT2Tokenizer`): `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3; `</s>`
  is both bos and eos and is prepended to every encoding, as OPT does.
- T5 (Unigram, `T5Tokenizer`): `<pad>` 0, `</s>` 1, `<unk>` 2; `</s>` appended, no bos,
  no `<extra_id_*>` sentinels (BLIP-2 does not use them).
- BERT (WordPiece, `BertTokenizer`): `[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4,
  and `[DEC]` appended as bos, as the BLIP-2 Q-Former adds to bert-base-uncased.
- CLIP (byte-level BPE with "</w>" word ends, `CLIPTokenizer`): the 256 bytes, the same with "</w>", one
  token per learned merge, then `<|startoftext|>` and `<|endoftext|>` as the last two ids, as OpenAI's
  vocabulary is laid out (so `<|endoftext|>` is the largest id, which CLIP's text pooling relies on).

The OPT and T5 tokenizers also get `<image>` as the last id (`tokenizer.image_token`),
the placeholder transformers' `Blip2Processor` repeats once per query token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer, CLIPTokenizer, GPT2Tokenizer, PreTrainedTokenizerFast, T5Tokenizer

IMAGE_TOKEN = "<image>"
# Named through `extra_special_tokens` so the tokenizer exposes `.image_token` / `.image_token_id`,
# which `Blip2Processor` looks for before adding its own.
_IMAGE_TOKEN_SPEC = {"image_token": IMAGE_TOKEN}

OPT_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
QFORMER_BOS_TOKEN = "[DEC]"
CLIP_SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]
_CLIP_MAX_LENGTH = 77  # OpenAI CLIP's context length
# bert-base-uncased and T5 checkpoints declare 512 positions; OPT declares no limit.
_BERT_T5_MAX_LENGTH = 512


def _train(tokenizer: Tokenizer, texts: Iterable[str], trainer: trainers.Trainer) -> Tokenizer:
    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on zero texts")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _save(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> PreTrainedTokenizerFast:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def train_opt_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Byte-level BPE with OPT's special tokens; saved as a `GPT2Tokenizer` in `out_dir`."""
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(byte_alphabet) + len(OPT_SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"byte-level BPE needs vocab_size >= {minimum} (256 bytes + specials), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # The full byte alphabet guarantees every byte, "\n" included, is a single token.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=OPT_SPECIAL_TOKENS,
        initial_alphabet=byte_alphabet,
        show_progress=False,
    )
    model = json.loads(_train(backend, texts, trainer).to_str())["model"]
    tokenizer = GPT2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(pair) for pair in model["merges"]],
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_prefix_space=False,
        add_bos_token=True,
        extra_special_tokens=_IMAGE_TOKEN_SPEC,
    )
    return _save(tokenizer, out_dir)


LLAMA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
LLAMA_BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]
# MiniGPT-4's `init_llm` sets `llama_tokenizer.pad_token = "$$"` (Vision-CAIR/MiniGPT-4 d94738a,
# minigpt4/models/base_model.py); here it is an added token after the learned ones.
LLAMA_PAD_TOKEN = "$$"


def train_llama_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 400):
    """BPE with LLaMA's layout: `<unk>` 0, `<s>` 1, `</s>` 2, the 256 byte-fallback pieces `<0x00>`..`<0xFF>`
    (so "\\n" is `<0x0A>` as in LLaMA), then the learned pieces with "▁" word starts, and `$$` as pad (added
    token, MiniGPT-4's pad). Saved as a `LlamaTokenizer` in `out_dir`; returned with `legacy=True`, the
    sentencepiece behaviour (a "▁" after special tokens too) that MiniGPT-4's `transformers` 4.30 had. Load it
    back with `LlamaTokenizer.from_pretrained(out_dir, legacy=True)`: the flag is not saved."""
    from transformers import LlamaTokenizer

    backend = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAMA_SPECIAL_TOKENS + LLAMA_BYTE_TOKENS,
                                  show_progress=False)
    model = json.loads(_train(backend, texts, trainer).to_str())["model"]
    tokenizer = LlamaTokenizer(vocab=model["vocab"], merges=[tuple(pair) for pair in model["merges"]], legacy=True,
                               add_bos_token=True, pad_token=LLAMA_PAD_TOKEN)
    return _save(tokenizer, out_dir)

def _canonical_unigram_vocab(vocab: list[list], n_special: int) -> list[tuple[str, float]]:
    """Fix the order and last digits the Unigram trainer leaves to thread and hash-map order.

    The learned pieces are the same on every run, but their order and the final bits of
    their scores (summed in parallel) are not. Segmentation depends only on the scores, so
    rounding them and sorting by score then piece makes ids reproducible.
    """
    specials = [(piece, float(score)) for piece, score in vocab[:n_special]]
    learned = [(piece, round(float(score), 8)) for piece, score in vocab[n_special:]]
    return specials + sorted(learned, key=lambda item: (-item[1], item[0]))


def train_t5_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Unigram with T5's special tokens and pre-tokeniser; saved as a `T5Tokenizer` in `out_dir`.

    Unigram stops early on a small corpus, so the vocabulary may be smaller than `vocab_size`.
    """
    backend = Tokenizer(models.Unigram())
    # The same pre-tokeniser `T5Tokenizer.__init__` installs, so learned pieces carry "▁" the same way.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=T5_SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
    )
    model = json.loads(_train(backend, texts, trainer).to_str())["model"]
    tokenizer = T5Tokenizer(
        vocab=_canonical_unigram_vocab(model["vocab"], len(T5_SPECIAL_TOKENS)),
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        extra_special_tokens=_IMAGE_TOKEN_SPEC,
        model_max_length=_BERT_T5_MAX_LENGTH,
    )
    return _save(tokenizer, out_dir)


# The `tokenizers` WordPiece trainer numbers its "##x" continuation symbols in hash-map
# order, so ties between equally frequent merges break differently on every run. We run
# the (deterministic) BPE trainer instead on words whose continuation characters are
# shifted into a private-use plane: every symbol is then a single character, ids follow
# code points, and mapping the shifted characters back to "##" + char gives the same kind
# of vocabulary the WordPiece trainer learns.
_CONTINUATION_OFFSET = 0xF0000  # Supplementary Private Use Area-A
_MAX_SHIFTED_CODEPOINT = 0xFFFD  # shifted code points must stay inside the plane


def _mark_continuations(word: str) -> str:
    if any(ord(char) > _MAX_SHIFTED_CODEPOINT for char in word[1:]):
        raise ValueError(f"cannot train on {word!r}: characters beyond U+FFFD are not supported")
    return word[:1] + "".join(chr(_CONTINUATION_OFFSET + ord(char)) for char in word[1:])


def _unmark_continuations(token: str) -> str:
    # A merged piece is word-initial ("th") when its first character is unshifted.
    shift = [_CONTINUATION_OFFSET if ord(char) >= _CONTINUATION_OFFSET else 0 for char in token]
    text = "".join(chr(ord(char) - offset) for char, offset in zip(token, shift))
    return "##" + text if token and ord(token[0]) >= _CONTINUATION_OFFSET else text


def _bert_words(texts: Iterable[str]) -> list[str]:
    """Lowercased BERT pre-tokens of each text, continuations marked, one text per line."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    lines = []
    for text in texts:
        words = splitter.pre_tokenize_str(normalizer.normalize_str(text))
        lines.append(" ".join(_mark_continuations(word) for word, _ in words))
    return lines


def _wordpiece_vocab(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIAL_TOKENS, show_progress=False)
    learned = _train(backend, _bert_words(texts), trainer).get_vocab()
    return {_unmark_continuations(token): index for token, index in learned.items()}


def train_bert_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Lowercasing WordPiece with BERT's special tokens plus `[DEC]` as bos; saved as a `BertTokenizer`."""
    tokenizer = BertTokenizer(
        vocab=_wordpiece_vocab(texts, vocab_size),
        do_lower_case=True,
        bos_token=QFORMER_BOS_TOKEN,  # not in the vocab, so it is appended as the last id
        truncation_side="right",
        model_max_length=_BERT_T5_MAX_LENGTH,
    )
    return _save(tokenizer, out_dir)


def train_clip_tokenizer(texts: Iterable[str], out_dir: str | Path, merges: int = 100) -> CLIPTokenizer:
    """At most `merges` BPE merges learned on `texts` with CLIP's normaliser and pre-tokeniser, laid out as
    OpenAI's vocabulary (bytes, bytes + "</w>", merges, specials); saved as a `CLIPTokenizer` in `out_dir`."""
    template = CLIPTokenizer()  # only for its normaliser and pre-tokeniser
    backend = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    backend.normalizer = template.backend_tokenizer.normalizer
    backend.pre_tokenizer = template.backend_tokenizer.pre_tokenizer
    byte_alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(vocab_size=2 * len(byte_alphabet) + merges, initial_alphabet=byte_alphabet,
                                  end_of_word_suffix="</w>", show_progress=False)
    learned = json.loads(_train(backend, texts, trainer).to_str())["model"]["merges"]
    base = byte_alphabet + [char + "</w>" for char in byte_alphabet]
    tokens = base + ["".join(pair) for pair in learned]
    tokens = list(dict.fromkeys(tokens)) + CLIP_SPECIAL_TOKENS
    tokenizer = CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)},
                              merges=[tuple(pair) for pair in learned], model_max_length=_CLIP_MAX_LENGTH)
    return _save(tokenizer, out_dir)


def newline_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """The id of "\\n"; BLIP-2 OPT generation stops on it. Raises if "\\n" is not one token."""
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f'"\\n" is {len(ids)} tokens ({ids}) for this tokenizer, expected exactly one')
    return ids[0]


def word_level_t5_tokenizer(texts: Sequence[str], out_dir: str | Path) -> T5Tokenizer:
    """A `T5Tokenizer` whose Unigram pieces are the corpus's whole words (plus single characters as a
    fallback). On a small closed vocabulary (the shapes captions) the Unigram trainer of `train_t5_tokenizer`
    stops at ~110 pieces and spells most words letter by letter, making sequences 3x longer and a tiny LM far
    slower to learn; here each word is one token, as in a real T5 vocabulary."""
    words = sorted({word for text in texts for word in text.split()})
    chars = sorted({char for word in words for char in word} | {"▁"})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"▁{word}", -1.0) for word in words] + [(char, -20.0) for char in chars]
    tokenizer = T5Tokenizer(vocab=vocab, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                            extra_special_tokens={"image_token": IMAGE_TOKEN}, model_max_length=512)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
