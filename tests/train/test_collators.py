"""Collators on tiny real tokenizers, with known answers for every mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from mixkit.testing import DEFAULT_TEXTS
from mixkit.data.tokenizers import newline_token_id, train_bert_tokenizer, train_opt_tokenizer, train_t5_tokenizer
from mixkit.train.collators import Stage1Collator, Stage2Collator, to_batch
from mixkit.train.stage1_task import Stage1Batch
from mixkit.train.stage2_task import Stage2Batch

CAPTIONS = ("a red circle", "a large blue square on the left")
PROMPT = "a photo of "


def samples(captions=CAPTIONS, prefix: str = "") -> list[dict]:
    return [{"image": torch.full((3, 8, 8), float(i)), "text_input": prefix + c, "image_id": 7 * i}
            for i, c in enumerate(captions)]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, PreTrainedTokenizerBase]:
    root: Path = tmp_path_factory.mktemp("tokenizers")
    return {
        "opt": train_opt_tokenizer(DEFAULT_TEXTS, root / "opt", vocab_size=300),
        "t5": train_t5_tokenizer(DEFAULT_TEXTS, root / "t5", vocab_size=200),
        "bert": train_bert_tokenizer(DEFAULT_TEXTS, root / "bert", vocab_size=200),
    }


def kept(labels: torch.Tensor) -> list[list[int]]:
    return [[token for token in row.tolist() if token != -100] for row in labels]


def test_opt_labels_mask_prompt_and_padding_and_end_with_newline(tokenizers) -> None:
    tokenizer = tokenizers["opt"]
    batch = Stage2Collator(tokenizer, encoder_decoder=False, prompt=PROMPT)(samples())
    prompt_length = len(tokenizer("a photo of")["input_ids"])  # LAVIS's count: "</s>a photo of"
    assert prompt_length == len(tokenizer("a photo of", add_special_tokens=False)["input_ids"]) + 1
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids[:, 0].tolist() == [tokenizer.bos_token_id] * 2
    assert (labels[:, :prompt_length] == -100).all()
    # the first caption token is a target
    assert (labels[:, prompt_length] == ids[:, prompt_length]).all()
    assert (labels[:, prompt_length] != -100).all()
    # pads are exactly the -100s after the text, and the padding is on the right
    assert mask[0].tolist() == sorted(mask[0].tolist(), reverse=True) and mask[0].sum() < mask[1].sum()
    assert ((labels == -100) == ((mask == 0) | (torch.arange(ids.shape[1]) < prompt_length))).all()
    newline = newline_token_id(tokenizer)
    for row, caption in zip(kept(labels), CAPTIONS):
        assert row[-1] == newline
        assert tokenizer.decode(row) == " " + caption + "\n"


def test_opt_prompt_already_in_text_gives_the_same_batch(tokenizers) -> None:
    tokenizer = tokenizers["opt"]
    prepended = Stage2Collator(tokenizer, False, prompt=PROMPT)(samples())
    in_text = Stage2Collator(tokenizer, False, prompt=PROMPT, prompt_in_text=True)(samples(prefix=PROMPT))
    for key in prepended:
        assert prepended[key].equal(in_text[key]), key
    with pytest.raises(ValueError, match="does not start with"):
        Stage2Collator(tokenizer, False, prompt=PROMPT, prompt_in_text=True)(samples())


def test_opt_without_prompt_masks_only_padding_and_truncates(tokenizers) -> None:
    tokenizer = tokenizers["opt"]
    batch = Stage2Collator(tokenizer, False)(samples())
    assert batch["labels"][:, 0].tolist() == [tokenizer.bos_token_id] * 2  # as LAVIS: nothing masked but pads
    short = Stage2Collator(tokenizer, False, max_text_length=5, newline_eos=False)(samples())
    assert short["input_ids"].shape == (2, 5)
    assert newline_token_id(tokenizer) not in short["input_ids"].tolist()


def test_padding_side_is_per_call_and_tokenizer_untouched(tokenizers) -> None:
    tokenizer = tokenizers["opt"]
    tokenizer.padding_side = "left"  # a generation setting must not leak into training batches
    try:
        batch = Stage2Collator(tokenizer, False, prompt=PROMPT)(samples())
        assert batch["input_ids"][0, 0] == tokenizer.bos_token_id and batch["attention_mask"][0, -1] == 0
        assert tokenizer.padding_side == "left"
    finally:
        tokenizer.padding_side = "right"


def test_t5_prompt_goes_to_encoder_caption_to_decoder(tokenizers) -> None:
    tokenizer = tokenizers["t5"]
    batch = Stage2Collator(tokenizer, encoder_decoder=True, prompt=PROMPT)(samples())
    prompt_ids = tokenizer("a photo of")["input_ids"]
    assert batch["input_ids"].tolist() == [prompt_ids, prompt_ids]
    assert batch["attention_mask"].all()
    assert (batch["decoder_attention_mask"].bool() == (batch["labels"] != -100)).all()
    for row, caption in zip(kept(batch["labels"]), CAPTIONS):
        assert row == tokenizer(caption)["input_ids"]  # caption + </s>, no "\n", pads dropped
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["pixel_values"][1].eq(1).all()
    assert isinstance(to_batch(Stage2Batch, {**batch, "num_skipped": 0}), Stage2Batch)


def test_t5_text_output_samples_use_question_and_answer(tokenizers) -> None:
    tokenizer = tokenizers["t5"]
    vqa = [{"image": torch.zeros(3, 8, 8), "text_input": "what is on the left", "text_output": "a red circle"}]
    batch = Stage2Collator(tokenizer, encoder_decoder=True, prompt=PROMPT)(vqa)
    assert batch["input_ids"].tolist() == [tokenizer("what is on the left")["input_ids"]]
    assert kept(batch["labels"]) == [tokenizer("a red circle")["input_ids"]]
    with pytest.raises(ValueError, match="every sample"):
        Stage2Collator(tokenizer, encoder_decoder=True)(vqa + samples())


def test_stage1_collator_cls_first_right_padded_with_image_ids(tokenizers) -> None:
    tokenizer = tokenizers["bert"]
    tokenizer.padding_side = "left"
    try:
        collated = Stage1Collator(tokenizer, max_text_length=6, use_image_ids=True)(samples())
    finally:
        tokenizer.padding_side = "right"
    batch = to_batch(Stage1Batch, collated)
    assert batch.input_ids[:, 0].tolist() == [tokenizer.cls_token_id] * 2
    assert batch.input_ids.shape[1] <= 6
    for row in batch.attention_mask.tolist():
        assert row == sorted(row, reverse=True)
    assert batch.attention_mask[0].sum() < batch.attention_mask[1].sum()
    assert batch.image_ids.tolist() == [0, 7]
    assert "image_ids" not in Stage1Collator(tokenizer)(samples())
