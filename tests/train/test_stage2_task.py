"""Stage-2 loss: known answers, parity with `transformers`' own BLIP-2 loss, and a short training run."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from transformers import Blip2ForConditionalGeneration, PreTrainedTokenizerBase

from mixkit.testing import DEFAULT_TEXTS, randomize_
from mixkit.data.tokenizers import train_opt_tokenizer, train_t5_tokenizer
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.train.collators import Stage2Collator, to_batch
from mixkit.train.stage2_task import Stage2Batch, Stage2Task, prepend_ignored, seq2seq_lm_loss, shift_right

CAPTIONS = ("a small red circle on the left", "a large blue square", "a green triangle on the top")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, PreTrainedTokenizerBase]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {
        "opt": train_opt_tokenizer(DEFAULT_TEXTS, root / "opt", vocab_size=300),
        "t5": train_t5_tokenizer(DEFAULT_TEXTS, root / "t5", vocab_size=200),
    }


def caption_batch(tokenizer: PreTrainedTokenizerBase, encoder_decoder: bool) -> Stage2Batch:
    pixels = torch.randn(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    samples = [{"image": image, "text_input": caption} for image, caption in zip(pixels, CAPTIONS)]
    return to_batch(Stage2Batch, Stage2Collator(tokenizer, encoder_decoder, prompt="a photo of ")(samples))


def test_shift_right_starts_with_decoder_start_and_pads_ignored() -> None:
    labels = torch.tensor([[5, 6, 1], [7, 1, -100]])
    assert shift_right(labels, decoder_start_token_id=0, pad_token_id=0).tolist() == [[0, 5, 6], [0, 7, 1]]
    assert labels[1, 2] == -100, "the caller's labels are not modified"
    assert prepend_ignored(torch.tensor([[3, 4]]), 2).tolist() == [[-100, -100, 3, 4]]


def test_seq2seq_loss_ignores_masked_positions() -> None:
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 100.0  # confident and right at position 0; positions 1 and 2 are ignored / uniform
    assert seq2seq_lm_loss(logits, torch.tensor([[2, -100, -100]]), 0.0) < 1e-6
    assert_close(seq2seq_lm_loss(logits, torch.tensor([[-100, 1, -100]]), 0.0), torch.tensor(4.0).log())


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_loss_matches_transformers(tokenizers, language_model: str) -> None:
    tokenizer = tokenizers[language_model]
    config = tiny_blip2_config(language_model, vocab_size=len(tokenizer))
    config.image_token_index = tokenizer.image_token_id
    reference = randomize_(Blip2ForConditionalGeneration(config), seed=0, std=0.15)
    ours = Blip2Model(config).eval()
    ours.load_state_dict(reference.state_dict())
    batch = caption_batch(tokenizer, ours.is_encoder_decoder)
    queries = config.num_query_tokens
    # transformers 5.x wants the image placeholders in the text; mixkit places the queries itself.
    image_ids = torch.full((batch.input_ids.shape[0], queries), tokenizer.image_token_id)
    hf_inputs = {
        "pixel_values": batch.pixel_values,
        "input_ids": torch.cat([image_ids, batch.input_ids], dim=1),
        "attention_mask": torch.cat([torch.ones_like(image_ids), batch.attention_mask], dim=1),
    }
    if ours.is_encoder_decoder:
        hf_inputs |= {"labels": batch.labels, "decoder_attention_mask": batch.decoder_attention_mask}
    else:
        hf_inputs["labels"] = prepend_ignored(batch.labels, queries)
    with torch.no_grad():
        expected = reference(**hf_inputs).loss
        actual = Stage2Task().compute(ours, batch).loss
    assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert expected > 1.0, "a loss near zero would make this comparison weak"


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_loss_falls_with_frozen_vit_and_llm(tokenizers, language_model: str) -> None:
    tokenizer = tokenizers[language_model]
    torch.manual_seed(0)
    model = Blip2Model(tiny_blip2_config(language_model, vocab_size=len(tokenizer)))
    randomize_(model, seed=0, std=0.15)
    model.lock_frozen_parts()
    model.train()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    assert any(name.startswith("language_model.") for name in frozen)
    assert any(name.startswith("vision_model.encoder.") for name in frozen)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=3e-3)
    batch, task = caption_batch(tokenizer, model.is_encoder_decoder), Stage2Task()
    losses = []
    for _ in range(20):
        loss = task.compute(model, batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Only the queries' path learns and the LLM is random, so the fall is steady but modest (~0.4 nats).
    assert losses[-1] < losses[0] - 0.2, losses
    assert sum(losses[-5:]) < sum(losses[:5]) - 0.5, losses
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert parameter.grad is None, name
            assert parameter.equal(frozen[name]), name
    assert all(p.grad is not None for p in trainable)


def test_head_on_labelled_positions_equals_full_logits(tokenizers) -> None:
    """The training shortcut (output head on labelled positions only) gives the full-logits loss and gradients."""
    tokenizer = tokenizers["opt"]
    model = randomize_(Blip2Model(tiny_blip2_config("opt", vocab_size=len(tokenizer))), seed=3, std=0.15)
    model.lock_frozen_parts()
    model.eval()  # no dropout, so the two passes see the same network; gradients still flow
    assert model.has_plain_output_head
    batch = caption_batch(tokenizer, encoder_decoder=False)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def loss_and_grads(full_logits: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        if full_logits:
            output = model(batch.pixel_values, batch.input_ids, batch.attention_mask)
            labels = prepend_ignored(batch.labels, output.num_query_positions)
            loss = torch.nn.functional.cross_entropy(
                output.logits[:, :-1].reshape(-1, output.logits.shape[-1]), labels[:, 1:].reshape(-1))
        else:
            loss = Stage2Task().compute(model, batch).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in trainable.items()}

    expected_loss, expected_grads = loss_and_grads(full_logits=True)
    loss, grads = loss_and_grads(full_logits=False)
    assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for name, grad in expected_grads.items():
        assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
