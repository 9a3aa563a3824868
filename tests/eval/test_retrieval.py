"""Retrieval: recall on hand-made score matrices, the ITM re-rank against brute force, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mixkit.eval import retrieval as rt
from mixkit.eval import retrieval_eval
from mixkit.utils.distributed import DistContext, shard

KEYS = {"txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean",
        "agg_metrics"}


def one_text_per_image(n: int) -> tuple[list[int], list[list[int]]]:
    return list(range(n)), [[i] for i in range(n)]


# ---------------------------------------------------------------- recall_at_k


def test_perfect_diagonal_is_100_everywhere():
    scores = torch.eye(12) + 0.01 * torch.rand(12, 12)
    result = rt.recall_at_k(scores, scores.t(), *one_text_per_image(12))
    assert set(result) == KEYS and all(value == 100.0 for value in result.values())


def test_right_text_second_lowers_r1_only():
    scores = torch.eye(4)
    scores[0, 1] = 2.0  # image 0 ranks text 1 above its own text
    result = rt.recall_at_k(scores, scores.t(), *one_text_per_image(4))
    assert result["txt_r1"] == 75.0 and result["txt_r5"] == 100.0 and result["txt_r10"] == 100.0
    # text 1 now ranks image 0 first (2.0 > 1.0): text retrieval also loses one of four at R@1
    assert result["img_r1"] == 75.0 and result["img_r5"] == 100.0
    assert result["txt_r_mean"] == pytest.approx((75 + 100 + 100) / 3)
    assert result["r_mean"] == pytest.approx((result["txt_r_mean"] + result["img_r_mean"]) / 2)
    assert result["agg_metrics"] == result["txt_r_mean"]


def test_rank_beyond_ten_counts_for_no_recall():
    n = 12
    scores = torch.eye(n)
    scores[0] = torch.arange(n, 0, -1).float() / 100  # image 0: its text (index 0) is... first
    scores[0, 0] = -1.0  # ... now last of 12: rank 11
    result = rt.recall_at_k(scores, torch.eye(n), *one_text_per_image(n))
    assert result["txt_r10"] == pytest.approx(100 * 11 / 12) and result["img_r10"] == 100.0


def test_five_captions_per_image_as_in_coco():
    # 2 images x 5 texts; image i owns texts 5i..5i+4
    txt2img = [0] * 5 + [1] * 5
    img2txts = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    i2t = torch.zeros(2, 10)
    i2t[0] = torch.tensor([0, 0, 0, 0, 0.5, 1, 1, 1, 1, 1.0])  # best own text (4) is 6th -> R@1, R@5 miss
    i2t[1] = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0.9, 0, 0.0])  # own text 7 is 2nd: any own text counts
    t2i = torch.zeros(10, 2)
    t2i[:, 0] = 1.0  # every text prefers image 0: right for the five texts of image 0 only
    result = rt.recall_at_k(i2t, t2i, txt2img, img2txts)
    assert (result["txt_r1"], result["txt_r5"], result["txt_r10"]) == (0.0, 50.0, 100.0)
    assert (result["img_r1"], result["img_r5"]) == (50.0, 100.0)  # 2 images: R@5 is everything


def test_ties_go_to_the_lower_index():
    scores = torch.zeros(3, 3)
    ranks = rt.best_ranks(scores, [[0], [1], [2]])
    assert ranks.tolist() == [0, 1, 2]


def test_inconsistent_index_is_refused():
    with pytest.raises(ValueError, match="img2txts"):
        rt.recall_at_k(torch.zeros(2, 2), torch.zeros(2, 2), [0, 1], [[1], [0]])
    with pytest.raises(ValueError, match="shapes"):
        rt.recall_at_k(torch.zeros(2, 3), torch.zeros(2, 2), [0, 1], [[0], [1]])


# ---------------------------------------------------------------- ITM re-rank on a tiny model


@pytest.fixture(scope="module")
def tiny_gallery():
    from mixkit.testing import randomize_
    from mixkit.models.blip2.stage1 import Blip2Stage1Model
    from mixkit.models.blip2.tiny import tiny_blip2_config

    torch.manual_seed(0)
    model = randomize_(Blip2Stage1Model(tiny_blip2_config(stage1=True)), seed=0, std=0.15)
    pixels = torch.randn(3, 3, 32, 32)
    ids = torch.randint(5, 120, (5, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        features = model.encode_image_features(pixels)
        sims = model.best_query_cosine(features.image_feats, model.text_features(ids, mask))
    return model, features.image_embeds, ids, mask, sims


def _scorer(model, image_embeds, ids, mask):
    @torch.no_grad()
    def itm(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return model.itm_logits(image_embeds[images], ids[texts], mask[texts])[:, 1]

    return itm


def _brute_force(model, image_embeds, ids, mask) -> torch.Tensor:
    """ITM match logit of every pair, one pair per forward: [images, texts]."""
    with torch.no_grad():
        return torch.tensor([[model.itm_logits(image_embeds[i : i + 1], ids[t : t + 1], mask[t : t + 1])[0, 1].item()
                              for t in range(ids.shape[0])] for i in range(image_embeds.shape[0])])


def test_rerank_with_all_candidates_is_itm_plus_similarity(tiny_gallery):
    model, image_embeds, ids, mask, sims = tiny_gallery
    expected = _brute_force(model, image_embeds, ids, mask) + sims
    i2t, t2i = rt.rerank_with_itm(sims, k=100, itm=_scorer(model, image_embeds, ids, mask))  # k clamps
    torch.testing.assert_close(i2t, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t2i, expected.t(), rtol=1e-5, atol=1e-5)


def test_rerank_with_one_candidate_fills_the_rest_with_minus_100(tiny_gallery):
    model, image_embeds, ids, mask, sims = tiny_gallery
    expected = _brute_force(model, image_embeds, ids, mask) + sims
    i2t, t2i = rt.rerank_with_itm(sims, k=1, itm=_scorer(model, image_embeds, ids, mask))
    for scores, reference, similarity in ((i2t, expected, sims), (t2i, expected.t(), sims.t())):
        best = similarity.argmax(dim=1)
        kept = scores != rt.UNRANKED_FILL
        assert kept.sum(dim=1).tolist() == [1] * scores.shape[0]
        assert kept.float().argmax(dim=1).tolist() == best.tolist()
        rows = torch.arange(scores.shape[0])
        torch.testing.assert_close(scores[rows, best], reference[rows, best], rtol=1e-5, atol=1e-5)


def test_sharded_rows_gathered_equal_one_process(tiny_gallery):
    model, image_embeds, ids, mask, sims = tiny_gallery
    itm = _scorer(model, image_embeds, ids, mask)
    rows = [row for rank in range(2)
            for row in rt.rerank_text_rows(sims, shard(range(5), DistContext(rank, 2)), 2, itm)]
    _, t2i = rt.rerank_with_itm(sims, k=2, itm=itm)
    assert torch.equal(rt.scatter_rows(rows, (5, 3)), t2i)


# ---------------------------------------------------------------- the CLI end to end


@pytest.fixture(scope="module")
def checkpoint_and_shapes(tmp_path_factory) -> tuple[Path, Path, Path]:
    from mixkit.testing import randomize_
    from mixkit.data.shapes import ShapesConfig, ShapesPaths, write_shapes_dataset
    from mixkit.data.tokenizers import train_bert_tokenizer
    from mixkit.data.transforms import ImageProcessorConfig
    from mixkit.models.blip2.stage1 import Blip2Stage1Model
    from mixkit.models.blip2.tiny import tiny_blip2_config

    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, ShapesConfig(num_train=1, num_val=4, num_test=0, image_size=64))
    paths = ShapesPaths.under(root)
    texts = [c for record in json.loads(paths.caption_val.read_text()) for c in record["caption"]]
    directory = tmp_path_factory.mktemp("stage1")
    tokenizer = train_bert_tokenizer(texts, directory, vocab_size=200)
    torch.manual_seed(0)
    model = Blip2Stage1Model(tiny_blip2_config(stage1=True, qformer_vocab_size=len(tokenizer)))
    randomize_(model, seed=0, std=0.15).save_pretrained(directory)
    ImageProcessorConfig(image_size=32).save(directory)
    return directory, paths.caption_val, root


def test_cli_writes_results_and_metrics(checkpoint_and_shapes, tmp_path, capsys):
    directory, records, root = checkpoint_and_shapes
    out = tmp_path / "out"
    argv = ["--model", str(directory), "--records", str(records), "--image-root", str(root),
            "--output-dir", str(out), "--k-test", "3", "--batch-size", "3", "--split", "val"]
    assert retrieval_eval.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out) == metrics
    assert set(metrics["scores"]) == KEYS and set(metrics["itc_scores"]) == KEYS
    assert all(0.0 <= v <= 100.0 for v in [*metrics["scores"].values(), *metrics["itc_scores"].values()])
    assert metrics["num_images"] == 4 and metrics["num_texts"] == 20  # 5 captions per shapes image
    assert metrics["k_used"] == {"i2t": 3, "t2i": 3} and metrics["image_size"] == 32
    assert set(metrics["versions"]) == {"torch", "transformers", "mixkit"}
    result = json.loads((out / "val_retrieval_result.json").read_text())
    assert len(result["images"]) == 4 and len(result["texts"]) == 20
    assert all(1 <= r["rank"] <= 20 and len(r["top_texts"]) == 10 for r in result["images"])
    assert all(1 <= r["rank"] <= 4 and len(r["top_images"]) == 4 for r in result["texts"])
    # the file's ranks are the ones the metrics were computed from
    img_r1 = 100 * sum(r["rank"] == 1 for r in result["texts"]) / 20
    assert metrics["scores"]["img_r1"] == pytest.approx(img_r1)


def test_missing_tokenizer_is_one_line_and_exit_2(checkpoint_and_shapes, tmp_path, capsys):
    directory, records, root = checkpoint_and_shapes
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (bare / name).write_bytes((directory / name).read_bytes())
    argv = ["--model", str(bare), "--records", str(records), "--image-root", str(root),
            "--output-dir", str(tmp_path / "out")]
    assert retrieval_eval.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "tokenizer" in err and "\n" not in err
