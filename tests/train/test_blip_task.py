"""BLIP's training losses against hand computations on tiny batches: momentum distillation and queues, hard
negatives, the caption loss after the prompt, VQA's weighted answer loss; gradients reach what trains and only
that; LAVIS's step schedule and alpha ramp; a checkpoint without the stage's heads is refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mixkit.testing import build_tiny_blip
from mixkit.train.blip_task import (BlipCaptionBatch, BlipCaptionCollator, BlipCaptionTask, BlipPretrainTask,
                                    BlipTextBatch, BlipVqaBatch, BlipVqaCollator, BlipVqaTask, ContrastiveFeatures,
                                    distilled_itc, negative_weights)
from mixkit.train.collators import to_batch
from mixkit.train.momentum import FeatureQueue, MomentumCopy, ramped_alpha
from mixkit.train.trainer import warmup_step_decay_factor

TEXTS = ("a red circle on the left", "a blue square at the top", "a green triangle", "a picture of",
         "what color is the circle?", "how many shapes are there?", "red", "two", "three", "yes")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("blip"), "BlipForPreTraining", TEXTS, weight_std=0.15)


def images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def text_batch(pipeline, texts) -> BlipTextBatch:
    tokens = pipeline.tokenizer(list(texts), padding="max_length", max_length=12, return_tensors="pt")
    return BlipTextBatch(images(len(texts)), tokens["input_ids"], tokens["attention_mask"])


def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=1)


# ---------------------------------------------------------------- ITC with momentum distillation


def test_distilled_itc_equals_a_hand_computation() -> None:
    batch, queue, dim, temp, alpha = 3, 4, 5, torch.tensor(0.07, dtype=torch.float64), 0.3
    f = ContrastiveFeatures(unit_rows(batch, dim, 0), unit_rows(batch, dim, 1), unit_rows(batch, dim, 2),
                            unit_rows(batch, dim, 3))
    image_queue, text_queue = unit_rows(queue, dim, 4), unit_rows(queue, dim, 5)
    loss, sim_i2t, sim_t2i = distilled_itc(f, image_queue, text_queue, temp, alpha)

    def direction(online, momentum_own, momentum_other, other_queue) -> float:
        columns = list(momentum_other) + list(other_queue)  # [batch's momentum features; queue]
        total = 0.0
        for i in range(batch):
            logits = [float(online[i] @ c) / 0.07 for c in columns]
            teacher = [float(momentum_own[i] @ c) / 0.07 for c in columns]
            log_z, teacher_z = math.log(sum(map(math.exp, logits))), sum(map(math.exp, teacher))
            for j in range(len(columns)):
                target = alpha * math.exp(teacher[j]) / teacher_z + (1 - alpha) * (i == j)
                total -= target * (logits[j] - log_z)
        return total / batch

    expected = (direction(f.image, f.image_momentum, f.text_momentum, text_queue)
                + direction(f.text, f.text_momentum, f.image_momentum, image_queue)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert sim_i2t.shape == sim_t2i.shape == (batch, batch + queue)


def test_momentum_copy_starts_equal_then_follows_by_ema() -> None:
    online, follower = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    copy = MomentumCopy(online, follower, ("weight", "bias"), momentum=0.9)
    torch.testing.assert_close(follower.weight, online.weight)
    assert not any(p.requires_grad for p in follower.parameters())
    before = follower.weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    copy.update(online)
    torch.testing.assert_close(follower.weight, 0.9 * before + 0.1 * online.weight.detach())
    with pytest.raises(ValueError, match="no counterpart"):
        MomentumCopy(online, torch.nn.Linear(4, 2), ("weight",), 0.9)


def test_feature_queue_writes_at_the_pointer_and_wraps() -> None:
    queue = FeatureQueue(size=5, dim=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(queue.features.norm(dim=1), torch.ones(5))
    first, second = torch.arange(6.0).view(3, 2), -torch.arange(6.0).view(3, 2)
    queue.push(first)
    queue.push(second)  # rows 3, 4, then 0
    torch.testing.assert_close(queue.features[:3], torch.cat([second[2:], first[1:]]))
    torch.testing.assert_close(queue.features[3:], second[:2])
    assert int(queue.pointer) == 1
    with pytest.raises(ValueError, match="does not fit"):
        queue.push(torch.zeros(6, 2))


def test_alpha_ramp_is_lavis_rampup_factor() -> None:
    """LAVIS: alpha * min(1, (epoch * iters_per_epoch + iters) / (2 * iters_per_epoch)); batch 4, 10 iterations."""
    for epoch, iters in [(0, 0), (0, 3), (1, 5), (2, 0), (3, 7)]:
        lavis = 0.4 * min(1, (epoch * 10 + iters) / (2 * 10))
        assert ramped_alpha(0.4, (epoch * 10 + iters) * 4, 40) == pytest.approx(lavis)


def test_step_decay_schedule_is_lavis_linear_warmup_step_lr() -> None:
    """Warm-up within epoch 0 (min(1, step / warmup)), then max(min_lr, init_lr * 0.9 ** epoch) per epoch."""
    init, floor, per_epoch = 3e-4, 1e-6, 100
    assert warmup_step_decay_factor(30, 60, per_epoch, 0.9, floor / init) == pytest.approx(0.5)
    assert warmup_step_decay_factor(80, 60, per_epoch, 0.9, floor / init) == 1.0
    assert warmup_step_decay_factor(250, 60, per_epoch, 0.9, floor / init) * init == pytest.approx(init * 0.81)
    assert warmup_step_decay_factor(10**5, 60, per_epoch, 0.9, floor / init) * init == pytest.approx(floor)


# ---------------------------------------------------------------- hard negatives and the whole pretraining loss


def test_hard_negatives_never_pick_the_own_pair() -> None:
    similarity = torch.tensor([[9.0, 1.0, 0.0], [0.0, 9.0, 1.0], [1.0, 0.0, 9.0]])
    weights = negative_weights(similarity)
    assert torch.all(weights.diagonal() == 0)
    expected = F.softmax(similarity, dim=1) + 1e-4
    expected.fill_diagonal_(0)
    torch.testing.assert_close(weights, expected)
    draws = torch.multinomial(weights, 200, replacement=True, generator=torch.Generator().manual_seed(0))
    assert not (draws == torch.arange(3)[:, None]).any()


def pretrain_task(pipeline, model, **overrides) -> BlipPretrainTask:
    options = dict(queue_size=8, momentum=0.995, alpha=0.4, samples_per_epoch=16, seed=0)
    return BlipPretrainTask(model, pipeline.enc_token_id, pipeline.bos_token_id, pipeline.tokenizer.pad_token_id,
                            **{**options, **overrides})


def test_pretraining_gradients_reach_what_trains_and_nothing_frozen(pipeline) -> None:
    model = pipeline.model
    model.lock_image_tower()
    try:
        task = pretrain_task(pipeline, model)
        model.train()
        task.train()
        with torch.no_grad():
            model.temp.fill_(0.9)  # clamped to LAVIS's 0.5 before use
        losses = task.compute(model, text_batch(pipeline, TEXTS[:4]), torch.Generator().manual_seed(0))
        losses.loss.backward()
        assert model.temp.item() == pytest.approx(0.5)
        torch.testing.assert_close(losses.loss.detach(), losses.itc + losses.itm + losses.lm)
        assert losses.alpha == 0.0 and task.current_alpha() == pytest.approx(0.4 * 4 / 32)  # first batch: no teacher
        assert all(p.grad is None for p in model.vision_model.parameters())
        assert all(p.grad is None for p in task.parameters())  # momentum copy
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        assert {n for n, p in model.named_parameters() if p.grad is not None} == trained
        assert int(task.image_queue.pointer) == 4 and int(task.text_queue.pointer) == 4
    finally:
        model.zero_grad(set_to_none=True)
        for parameter in model.vision_model.parameters():
            parameter.requires_grad_(True)
        model.vision_frozen = False
        model.eval()


def test_pretraining_refuses_a_model_without_every_head(tmp_path: Path) -> None:
    caption_only = build_tiny_blip(tmp_path, "BlipForConditionalGeneration", TEXTS)
    with pytest.raises(ValueError, match="every head"):
        pretrain_task(caption_only, caption_only.model)


# ---------------------------------------------------------------- caption and VQA losses


def test_caption_loss_covers_only_the_tokens_after_the_prompt(pipeline) -> None:
    collator = BlipCaptionCollator(pipeline.tokenizer, pipeline.bos_token_id, "a picture of ", max_text_length=40)
    samples = [{"image": images(1, i)[0], "text_input": text} for i, text in enumerate(TEXTS[:3])]
    batch = to_batch(BlipCaptionBatch, collator(samples))
    prompt_ids = pipeline.prompt_ids("a picture of ", 1)[0]  # [DEC] a picture of: the pipeline's generation start
    assert collator.prompt_length == len(prompt_ids) == 4
    torch.testing.assert_close(batch.input_ids[:, :4], prompt_ids.expand(3, -1))
    assert torch.all(batch.labels[:, :4] == -100)
    model = pipeline.model
    loss = BlipCaptionTask().compute(model, batch).loss
    # By hand: each row's caption tokens after the prompt, up to [SEP], predicted from the row alone (no padding).
    total, count = 0.0, 0
    for row in range(3):
        length = int(batch.attention_mask[row].sum())
        ids = batch.input_ids[row : row + 1, :length]
        logits = model.decoder_logits(model.encode_image(batch.pixel_values[row : row + 1]), ids,
                                      torch.ones_like(ids))[0]
        total += F.cross_entropy(logits[3 : length - 1], ids[0, 4:length], label_smoothing=0.1,
                                 reduction="sum").item()
        count += length - 4
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_vqa_loss_is_the_weighted_sum_of_answer_losses_over_questions(pipeline) -> None:
    collator = BlipVqaCollator(pipeline.tokenizer, pipeline.enc_token_id, pipeline.bos_token_id)
    samples = [{"image": images(1, 1)[0], "text_input": "what color is the circle?", "answers": ["red", "yes"],
                "weights": [0.7, 0.3]},
               {"image": images(1, 2)[0], "text_input": "how many shapes are there?", "answers": ["two three"],
                "weights": [1.0]}]
    batch = to_batch(BlipVqaBatch, collator(samples))
    assert batch.answer_counts.tolist() == [2, 1] and torch.all(batch.question_ids[:, 0] == pipeline.enc_token_id)
    model = pipeline.model
    loss = BlipVqaTask().compute(model, batch).loss
    expected = 0.0
    for sample in samples:  # one question at a time, nothing padded: LAVIS's loss by its definition
        embeds = model.encode_image(sample["image"][None])
        question = pipeline.tokenize([sample["text_input"]], first_token=pipeline.enc_token_id)
        states = model.multimodal_hidden(embeds, question.input_ids, question.attention_mask)
        for answer, weight in zip(sample["answers"], sample["weights"]):
            ids = pipeline.tokenize([answer], first_token=pipeline.bos_token_id).input_ids
            logits = model.decoder_logits(states, ids, torch.ones_like(ids))[0]
            expected += weight * F.cross_entropy(logits[:-1], ids[0, 1:], label_smoothing=0.1, reduction="sum").item()
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)
    with pytest.raises(ValueError, match="answers"):
        collator([{"image": images(1)[0], "text_input": "what?", "answers": ["a"], "weights": []}])


def test_pretraining_state_round_trips_through_a_state_dict(pipeline) -> None:
    """What a checkpoint's task_state.safetensors holds: a fresh task loaded with it has the trained task's
    momentum copy, queues and ramp position, and gives the same next loss."""
    from mixkit.train.trainer import task_training_state

    model = pipeline.model.train()
    trained = pretrain_task(pipeline, model)
    for start in (0, 4):
        trained.compute(model, text_batch(pipeline, TEXTS[start : start + 4]), torch.Generator().manual_seed(0))
    state = task_training_state(trained)
    assert int(state["_extra_state"]) == 8 and int(state["image_queue.pointer"]) == 0  # 8 rows in a queue of 8
    fresh = pretrain_task(pipeline, model)
    assert fresh.samples_seen == 0 and not torch.equal(fresh.image_queue.features, trained.image_queue.features)
    fresh.load_state_dict(state)
    assert fresh.samples_seen == 8 and fresh.current_alpha() == trained.current_alpha()
    for name, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    model.eval()
    batch = text_batch(pipeline, TEXTS[:4])
    torch.testing.assert_close(fresh.compute(model, batch, torch.Generator().manual_seed(1)).loss,
                               trained.compute(model, batch, torch.Generator().manual_seed(1)).loss)
