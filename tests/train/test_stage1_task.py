"""Stage-1 losses on cases with known answers."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close

from mixkit.models.blip2.qformer import causal_text_mask
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.train.stage1_task import (
    Stage1Batch,
    Stage1Task,
    itc_loss,
    itg_inputs,
    positive_mask,
    sample_hard_negatives,
    shifted_lm_loss,
)


def test_itc_uniform_similarities_cost_log_batch() -> None:
    positives = positive_mask(4, 4, 0, None, None, torch.device("cpu"))
    assert positives.equal(torch.eye(4, dtype=torch.bool))
    loss = itc_loss(torch.zeros(4, 4), torch.zeros(4, 4), positives, label_smoothing=0.1)
    assert_close(loss, torch.tensor(math.log(4)))


def test_itc_targets_are_own_index_on_every_rank() -> None:
    # Rank 1 of 2 with 3 samples each: its positives sit at columns 3, 4, 5.
    positives = positive_mask(3, 6, 1, None, None, torch.device("cpu"))
    assert positives.nonzero().tolist() == [[0, 3], [1, 4], [2, 5]]
    sim = torch.full((3, 6), -5.0)
    sim[positives] = 5.0
    confident = itc_loss(sim, sim, positives, label_smoothing=0.0)
    assert confident < 1e-3
    # label smoothing 0.1 puts 0.1/6 on every class: the loss can no longer reach zero
    smoothed = itc_loss(sim, sim, positives, label_smoothing=0.1)
    expected = -(0.9 + 0.1 / 6) * torch.log_softmax(sim[0], 0)[3] - (0.1 / 6) * torch.log_softmax(sim[0], 0)[:3].sum() \
        - (0.1 / 6) * torch.log_softmax(sim[0], 0)[4:].sum()
    assert_close(smoothed, expected)


def test_itc_with_image_ids_spreads_targets_over_same_image() -> None:
    image_ids = torch.tensor([7, 7, 8])
    positives = positive_mask(3, 3, 0, image_ids, image_ids, torch.device("cpu"))
    assert positives.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    sim = torch.zeros(3, 3)
    # uniform logits: loss = log(3) whatever the (normalised) target distribution
    assert_close(itc_loss(sim, sim, positives, 0.1), torch.tensor(math.log(3)))


def test_hard_negatives_never_pick_the_positive() -> None:
    generator = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 6, generator=generator)
    sim.fill_diagonal_(50.0)  # the positive is by far the most similar
    positives = torch.eye(6, dtype=torch.bool)
    picks = torch.stack([sample_hard_negatives(sim, positives, generator) for _ in range(500)])
    assert not (picks == torch.arange(6)).any()
    # and the draw favours the hardest negative of each row
    hardest = sim.masked_fill(positives, -1e9).argmax(dim=1)
    most_picked = torch.mode(picks, dim=0).values
    assert (most_picked == hardest).float().mean() >= 0.5


def test_itg_inputs_replace_first_token_and_mask_padding() -> None:
    ids = torch.tensor([[101, 5, 6, 102], [101, 7, 102, 0]])
    decoder_ids, labels = itg_inputs(ids, bos_token_id=99, pad_token_id=0)
    assert decoder_ids.tolist() == [[99, 5, 6, 102], [99, 7, 102, 0]]
    assert labels.tolist() == [[99, 5, 6, 102], [99, 7, 102, -100]]
    assert ids[0, 0] == 101, "the caller's ids are not modified"


def test_itg_mask_sees_all_queries_and_only_earlier_text() -> None:
    mask = causal_text_mask(torch.tensor([[1, 1, 1, 0]]), prefix_length=2)[0, 0]
    assert mask.int().tolist() == [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
    ]


def _model() -> Blip2Stage1Model:
    torch.manual_seed(0)
    return Blip2Stage1Model(tiny_blip2_config(stage1=True)).eval()


def test_itg_logits_are_causal_and_image_grounded() -> None:
    model = _model()
    pixels = torch.randn(1, 3, 32, 32)
    ids = torch.tensor([[99, 5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        features = model.encode_image_features(pixels)
        base = model.itg_logits(features.query_key_values, ids, mask)
        later_changed = model.itg_logits(features.query_key_values, torch.tensor([[99, 5, 6, 40, 41]]), mask)
        other_image = model.itg_logits(model.encode_image_features(-pixels).query_key_values, ids, mask)
    assert_close(later_changed[:, :3], base[:, :3])
    assert not torch.allclose(later_changed[:, 3:], base[:, 3:])
    assert not torch.allclose(other_image[:, 0], base[:, 0])


def test_itg_query_cache_equals_joint_forward() -> None:
    """Reusing the queries' cached keys/values equals running [queries; text] under the prefix-causal mask."""
    model = _model()
    pixels, ids = torch.randn(2, 3, 32, 32), torch.tensor([[99, 5, 6, 0], [99, 8, 9, 10]])
    mask = (ids != 0).long()
    with torch.no_grad():
        features = model.encode_image_features(pixels)
        cached = model.itg_logits(features.query_key_values, ids, mask)
        queries = model.query_tokens.expand(2, -1, -1)
        num_q = queries.shape[1]
        joint_mask = torch.zeros(2, 1, num_q + 4, num_q + 4, dtype=torch.bool)
        joint_mask[:, :, :num_q, :num_q] = True  # queries see queries only
        joint_mask[:, :, num_q:] = causal_text_mask(mask, num_q)
        hidden = model.qformer(torch.cat([queries, model.embeddings(ids)], 1), query_length=num_q,
                               self_mask=joint_mask, image_embeds=features.image_embeds).last_hidden_state
        joint = model.lm_head(hidden[:, num_q:], model.embeddings.word_embeddings.weight)
    assert_close(cached, joint, rtol=1e-5, atol=1e-5)


def test_shifted_lm_loss_predicts_next_token() -> None:
    labels = torch.tensor([[-100, 3, 1]])
    logits = torch.full((1, 3, 5), -20.0)
    logits[0, 0, 3] = 20.0
    logits[0, 1, 1] = 20.0
    assert shifted_lm_loss(logits, labels, label_smoothing=0.0) < 1e-6


def test_stage1_loss_trains_every_part_and_is_finite() -> None:
    model = _model().train()
    model.lock_image_tower()
    task = Stage1Task(bos_token_id=99, pad_token_id=0)
    batch = Stage1Batch(torch.randn(3, 3, 32, 32), torch.tensor([[101, 5, 6, 0], [101, 7, 8, 9], [101, 10, 0, 0]]),
                        torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]))
    losses = task.compute(model, batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(losses.loss) and losses.itc > 0 and losses.itm > 0 and losses.itg > 0
    losses.loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith(("vision_model.embeddings", "vision_model.encoder")):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None, name


def _batch(pad_to: int) -> Stage1Batch:
    ids = [[101, 5, 6], [101, 7, 8, 9], [101, 10]]
    padded = torch.tensor([row + [0] * (pad_to - len(row)) for row in ids])
    return Stage1Batch(torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)), padded,
                       (padded != 0).long())


def test_itg_head_on_labelled_positions_equals_the_full_logits_loss() -> None:
    model, task = _model(), Stage1Task(bos_token_id=99, pad_token_id=0)
    batch = _batch(pad_to=6)
    with torch.no_grad():
        losses = task.compute(model, batch, torch.Generator().manual_seed(0))
        features = model.encode_image_features(batch.pixel_values)
        decoder_ids, labels = itg_inputs(batch.input_ids, 99, 0)
        full = shifted_lm_loss(model.itg_logits(features.query_key_values, decoder_ids, batch.attention_mask),
                               labels, label_smoothing=0.1)
    assert_close(losses.itg, full, rtol=1e-6, atol=1e-6)


def test_padding_to_the_longest_caption_keeps_the_losses() -> None:
    """What one process does (pad to the batch's longest) gives the fixed-length (LAVIS) losses."""
    model, task = _model(), Stage1Task(bos_token_id=99, pad_token_id=0)
    with torch.no_grad():
        fixed = task.compute(model, _batch(pad_to=32), torch.Generator().manual_seed(0))
        longest = task.compute(model, _batch(pad_to=4), torch.Generator().manual_seed(0))
    for name in ("loss", "itc", "itm", "itg"):
        assert_close(getattr(longest, name), getattr(fixed, name), rtol=1e-5, atol=1e-5, msg=name)
