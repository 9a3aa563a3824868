"""ALBEF's training losses against hand computations on a tiny batch.

The expected values are written here with plain torch ops from LAVIS's formulas (lavis/models/albef_models/
albef_retrieval.py and albef_pretrain.py at commit 506965b; see mixkit/train/albef_task.py for the list): the
EMA of the momentum parameters, the momentum features, the targets over [batch; queue] with id positives, the
soft cross-entropies, the queue contents after the step, the ITM rows and the distilled MLM loss. Only the
encoders' forward passes (the model's outputs, checked against LAVIS's layout elsewhere) are called.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixkit.data.tokenizers import train_bert_tokenizer
from mixkit.models.albef.modeling import AlbefModel
from mixkit.models.albef.tiny import tiny_albef_config
from mixkit.testing import DEFAULT_TEXTS, randomize_
from mixkit.train.albef_task import AlbefBatch, AlbefCollator, AlbefTask, draw_negatives, mask_tokens, negative_weights

FOLLOWED = ("vision_model.", "text_encoder.", "vision_proj.", "text_proj.")


def tiny_model(architecture: str = "AlbefForRetrieval", seed: int = 1) -> AlbefModel:
    torch.manual_seed(seed)
    model = randomize_(AlbefModel(tiny_albef_config(vocab_size=60), architecture), seed, std=0.2).train()
    with torch.no_grad():
        model.temp.fill_(0.9)  # above LAVIS's clamp: the task must bring it to 0.5
    return model


def tiny_batch(image_ids: list[int], seed: int) -> AlbefBatch:
    generator = torch.Generator().manual_seed(seed)
    size = len(image_ids)
    ids = torch.randint(5, 60, (size, 8), generator=generator)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # one padded caption
    ids[0, 6:] = 0
    return AlbefBatch(torch.randn(size, 3, 32, 32, generator=generator), ids, mask, torch.tensor(image_ids))


def make_task(model: AlbefModel, use_image_ids: bool = True) -> AlbefTask:
    task = AlbefTask(model, queue_size=6, momentum=0.5, alpha=0.4, samples_per_epoch=4, use_image_ids=use_image_ids)
    with torch.no_grad():  # a momentum model that has drifted from the online one, so the EMA is visible
        for parameter in task.momentum_model.model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)) * 0.05)
    return task


def expected_follower(model: AlbefModel, follower: dict[str, torch.Tensor], momentum: float,
                      followed: tuple[str, ...] = FOLLOWED) -> dict[str, torch.Tensor]:
    """LAVIS `_momentum_update`: p_m = p_m * momentum + p * (1 - momentum), for the followed parts only."""
    online = dict(model.named_parameters())
    return {name: value * momentum + online[name].detach() * (1 - momentum) if name.startswith(followed) else value
            for name, value in follower.items()}


def momentum_reference(model: AlbefModel, parameters: dict[str, torch.Tensor]) -> AlbefModel:
    reference = AlbefModel(model.config, model.architecture)
    reference.load_state_dict(parameters, strict=False)
    return reference.eval()


def features(model: AlbefModel, batch: AlbefBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image embeds, text states, image feature, text feature): LAVIS's `forward_features`, `forward_text` and
    the normalised projections of the first position."""
    image_embeds = model.encode_image(batch.pixel_values)
    text_states = model.text_encoder.text(batch.input_ids, batch.attention_mask)
    image_feat = F.normalize(model.vision_proj(image_embeds[:, 0, :]), dim=-1)
    text_feat = F.normalize(model.text_proj(text_states[:, 0, :]), dim=-1)
    return image_embeds, text_states, image_feat, text_feat


def expected_itc(model, reference, batch, image_queue, text_queue, id_queue, alpha, temp):
    """LAVIS albef_retrieval.forward, ITC part, line by line ([dim, size] queues transposed to rows here)."""
    with torch.no_grad():
        _, _, image_feat, text_feat = features(model, batch)
        _, _, image_feat_m, text_feat_m = features(reference, batch)
        idx = batch.image_ids.view(-1, 1)
        idx_all = torch.cat([idx.t(), id_queue.view(1, -1)], dim=1)
        pos_idx = torch.eq(idx, idx_all).float()
        sim_targets = pos_idx / pos_idx.sum(1, keepdim=True)
        image_feat_all = torch.cat([image_feat_m.t(), image_queue.t()], dim=1)
        text_feat_all = torch.cat([text_feat_m.t(), text_queue.t()], dim=1)
        sim_i2t_m = image_feat_m @ text_feat_all / temp
        sim_t2i_m = text_feat_m @ image_feat_all / temp
        sim_i2t_targets = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * sim_targets
        sim_t2i_targets = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * sim_targets
        sim_i2t = image_feat @ text_feat_all / temp
        sim_t2i = text_feat @ image_feat_all / temp
        loss_i2t = -torch.sum(F.log_softmax(sim_i2t, dim=1) * sim_i2t_targets, dim=1).mean()
        loss_t2i = -torch.sum(F.log_softmax(sim_t2i, dim=1) * sim_t2i_targets, dim=1).mean()
    return (loss_i2t + loss_t2i) / 2, image_feat_m, text_feat_m


def test_itc_momentum_distillation_and_queues_match_a_hand_computation() -> None:
    model = tiny_model()
    task = make_task(model)
    with torch.no_grad():
        task.id_queue.ids[:2] = torch.tensor([9, 5])  # an earlier caption of image 5 is queued: a positive column
    for step, image_ids in enumerate(([5, 5, 2], [7, 2, 8])):
        batch = tiny_batch(image_ids, seed=step)
        task.samples_seen = 6 if step == 0 else task.samples_seen  # ramp: 0.4 * min(1, 6 / (2 * 4)) = 0.3
        alpha = 0.4 * min(1.0, task.samples_seen / (2 * 4))
        follower = {name: p.detach().clone() for name, p in task.momentum_model.model.named_parameters()}
        queues = (task.image_queue.features.clone(), task.text_queue.features.clone(), task.id_queue.ids.clone())
        pointer = int(task.image_queue.pointer)

        losses = task.compute(model, batch, torch.Generator().manual_seed(step))

        assert model.temp.item() == 0.5  # clamped in place to LAVIS's [0.001, 0.5]
        assert losses.alpha == alpha
        updated = expected_follower(model, follower, 0.5)
        for name, parameter in task.momentum_model.model.named_parameters():
            torch.testing.assert_close(parameter, updated[name], rtol=0, atol=1e-7, msg=name)
        itc, image_feat_m, text_feat_m = expected_itc(model, momentum_reference(model, updated), batch, *queues,
                                                      alpha=alpha, temp=0.5)
        torch.testing.assert_close(losses.itc, itc, rtol=1e-5, atol=1e-6)
        # The queues get the batch's momentum features and ids after the loss, at the pointer, wrapping around.
        rows = (torch.arange(3) + pointer) % 6
        torch.testing.assert_close(task.image_queue.features[rows], image_feat_m, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(task.text_queue.features[rows], text_feat_m, rtol=1e-5, atol=1e-6)
        assert task.id_queue.ids[rows].tolist() == image_ids
        untouched = torch.tensor([i for i in range(6) if i not in rows.tolist()])
        torch.testing.assert_close(task.image_queue.features[untouched], queues[0][untouched])
        assert int(task.image_queue.pointer) == int(task.id_queue.pointer) == (pointer + 3) % 6
    assert task.samples_seen == 12
    assert task.current_alpha() == 0.4  # the ramp is complete after two epochs' worth of samples


def test_evaluation_mode_leaves_momentum_and_queues_alone() -> None:
    model = tiny_model().eval()
    task = make_task(model)
    before = [p.clone() for p in task.momentum_model.model.parameters()]
    queue = task.image_queue.features.clone()
    task.compute(model, tiny_batch([1, 2, 3], seed=0))
    assert all(torch.equal(a, b) for a, b in zip(before, task.momentum_model.model.parameters()))
    assert torch.equal(queue, task.image_queue.features) and task.samples_seen == 0


def test_itm_rows_hard_negatives_and_loss_match_a_hand_computation() -> None:
    model = tiny_model()
    task = make_task(model)
    batch = tiny_batch([5, 5, 2, 3], seed=3)
    losses = task.compute(model, batch, torch.Generator().manual_seed(11))
    same = batch.image_ids[:, None] == batch.image_ids[None, :]
    negative_images, negative_texts = losses.negative_images, losses.negative_texts
    assert not same[torch.arange(4), negative_images].any()  # never a caption of the same image
    assert not same[torch.arange(4), negative_texts].any()
    with torch.no_grad():  # LAVIS: rows [positives; (text, negative image); (negative text, image)]
        image_embeds, text_embeds, _, _ = features(model, batch)
        text_all = torch.cat([text_embeds, text_embeds, text_embeds[negative_texts]])
        mask_all = torch.cat([batch.attention_mask, batch.attention_mask, batch.attention_mask[negative_texts]])
        image_all = torch.cat([image_embeds, image_embeds[negative_images], image_embeds])
        fused = model.text_encoder.fuse(text_all, mask_all, image_all)[:, 0, :]
        labels = torch.tensor([1] * 4 + [0] * 8)
        expected = F.cross_entropy(model.itm_head(fused), labels)
    torch.testing.assert_close(losses.itm, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses.loss, losses.itc + losses.itm + losses.mlm)


def test_hard_negatives_are_drawn_from_the_softmax_without_positives() -> None:
    similarity = torch.tensor([[3.0, 2.0, 0.0, 1.0], [2.0, 3.0, 0.5, 0.0], [0.0, 1.0, 3.0, 2.0],
                               [1.0, 0.0, 2.0, 3.0]])
    positives = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    exp = similarity.exp() * (~positives)
    expected = exp / exp.sum(1, keepdim=True)
    weights = negative_weights(similarity, positives)
    torch.testing.assert_close(weights / weights.sum(1, keepdim=True), expected)
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_negatives(similarity, positives, generator) for _ in range(4000)])
    frequencies = torch.stack([torch.bincount(draws[:, row], minlength=4).float() / 4000 for row in range(4)])
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.03)


def test_a_batch_without_negatives_is_a_clear_error() -> None:
    try:
        negative_weights(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool))
    except ValueError as error:
        assert "no negative" in str(error)
    else:
        raise AssertionError("expected a ValueError")


def test_mlm_masking_follows_lavis_proportions(tmp_path) -> None:
    tokenizer = train_bert_tokenizer(DEFAULT_TEXTS, tmp_path, vocab_size=300)
    tokens = tokenizer(list(DEFAULT_TEXTS) * 40, padding="max_length", max_length=12, return_tensors="pt")
    ids, labels = mask_tokens(tokens.input_ids, tokenizer, 0.15, torch.Generator().manual_seed(0))
    original = tokens.input_ids
    chosen = labels != -100
    eligible = (original != tokenizer.pad_token_id) & (original != tokenizer.cls_token_id)
    assert not (chosen & ~eligible).any()  # never padding or [CLS]
    assert torch.equal(labels[chosen], original[chosen]) and torch.equal(ids[~chosen], original[~chosen])
    assert abs(chosen.sum() / eligible.sum() - 0.15) < 0.02
    masked = (ids == tokenizer.mask_token_id) & chosen
    kept = (ids == original) & chosen
    assert abs(masked.sum() / chosen.sum() - 0.8) < 0.04
    assert abs(kept.sum() / chosen.sum() - 0.1) < 0.04  # 10% kept (+ the few random draws of the same token)


def test_mlm_distillation_matches_a_hand_computation(tmp_path) -> None:
    tokenizer = train_bert_tokenizer(DEFAULT_TEXTS, tmp_path, vocab_size=300)
    torch.manual_seed(2)
    config = tiny_albef_config(vocab_size=len(tokenizer), cls_token_id=tokenizer.cls_token_id,
                               sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    model = randomize_(AlbefModel(config, "AlbefForPreTraining"), 2, std=0.2).train()
    task = make_task(model, use_image_ids=False)
    task.samples_seen = 2  # alpha = 0.4 * 2 / 8 = 0.1
    samples = [{"image": torch.randn(3, 32, 32), "text_input": text} for text in DEFAULT_TEXTS[:4]]
    collated = AlbefCollator(tokenizer, max_text_length=12, mlm_probability=0.5, seed=1)(samples)
    batch = AlbefBatch(**collated)
    follower = {name: p.detach().clone() for name, p in task.momentum_model.model.named_parameters()}
    losses = task.compute(model, batch, torch.Generator().manual_seed(0))
    updated = expected_follower(model, follower, 0.5, FOLLOWED + ("mlm_head.",))
    torch.testing.assert_close(dict(task.momentum_model.model.named_parameters())["mlm_head.bias"],
                               updated["mlm_head.bias"])  # the MLM head is followed too (BertForMaskedLM)
    reference = momentum_reference(model, updated)
    with torch.no_grad():
        logits = model.mlm_logits(model.encode_image(batch.pixel_values), batch.mlm_input_ids, batch.attention_mask)
        logits_m = reference.mlm_logits(reference.encode_image(batch.pixel_values), batch.mlm_input_ids,
                                        batch.attention_mask)
        labels = batch.mlm_labels
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))  # ignore_index -100
        distill = -torch.sum(F.log_softmax(logits, dim=-1) * F.softmax(logits_m, dim=-1), dim=-1)
        distill = distill[labels != -100].mean()
        expected = (1 - 0.1) * ce + 0.1 * distill
    torch.testing.assert_close(losses.mlm, expected, rtol=1e-5, atol=1e-6)
    assert losses.alpha == 0.1



def test_updates_before_each_forward_equal_updates_inside_it() -> None:
    """The FSDP2 schedule (`update_before_forward`: the Trainer runs the EMA just before each training forward)
    gives the losses and copy of LAVIS's (the EMA at the start of the forward), with gradient accumulation."""
    runs = {}
    for before in (False, True):
        model = tiny_model()
        task = make_task(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        losses = []
        for step in range(2):
            for micro in range(2):  # gradient accumulation over 2 forwards
                if before:
                    task.update_before_forward(model)
                batch = tiny_batch([step, micro + 3, 5], seed=2 * step + micro)
                loss = task.compute(model, batch, torch.Generator().manual_seed(micro)).loss
                (loss / 2).backward()
                losses.append(loss.detach())
            optimizer.step()
            optimizer.zero_grad()
        runs[before] = (losses, dict(task.momentum_model.model.named_parameters()))
    assert all(torch.equal(first, second) for first, second in zip(runs[True][0], runs[False][0]))
    for name, parameter in runs[False][1].items():
        assert torch.equal(runs[True][1][name], parameter), name
