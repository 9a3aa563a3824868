"""Image-text retrieval scoring as LAVIS runs it for BLIP-2: ITC top-k, ITM re-rank, recall at 1/5/10.

The re-rank (LAVIS `compute_sim_matrix`): for each image, the `k` texts with the highest ITC
similarity (best-query cosine, no temperature) are scored again by the ITM head; their final score
is the ITM match logit (averaged over query positions, not a probability) plus that similarity,
and every other text of the row gets -100. The same for each text over the images.

Ranks (`recall_at_k`, LAVIS `itm_eval`): an image is retrieved at the best position of any of its
texts; a text at the position of its one image. Ties are broken by the lower index (a stable
sort); LAVIS leaves them to numpy's unstable sort, which matters only among the -100 fills,
beyond rank `k`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

UNRANKED_FILL = -100.0  # LAVIS's score for the candidates outside the top k
RECALL_KS = (1, 5, 10)
_ROWS_PER_SORT = 256  # rows sorted at once: bounds the memory of the rank computation

# (image indices [n], text indices [n]) -> ITM match score of each pair [n].
PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- ranks and recall


def sorted_columns(scores: torch.Tensor) -> torch.Tensor:
    """Column indices of each row, highest score first; ties keep the lower index first."""
    return torch.argsort(scores, dim=1, descending=True, stable=True)


def best_ranks(scores: torch.Tensor, targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per row, the 0-based position of its best-placed target column; a row without targets gets the
    number of columns (never retrieved, as LAVIS's 1e20)."""
    num_rows, num_cols = scores.shape
    ranks = torch.full((num_rows,), num_cols, dtype=torch.long)
    for start in range(0, num_rows, _ROWS_PER_SORT):
        order = sorted_columns(scores[start : start + _ROWS_PER_SORT])
        positions = torch.empty_like(order)
        positions.scatter_(1, order, torch.arange(num_cols).expand_as(order))
        for offset, row_targets in enumerate(targets[start : start + _ROWS_PER_SORT]):
            if len(row_targets) > 0:
                ranks[start + offset] = positions[offset, list(row_targets)].min()
    return ranks


def recall(ranks: torch.Tensor, k: int) -> float:
    """Percent of queries whose best target is among the first `k` (in double precision, as LAVIS)."""
    return 100.0 * int((ranks < k).sum()) / len(ranks)


def check_index(shape_i2t: tuple[int, ...], shape_t2i: tuple[int, ...], txt2img: Sequence[int],
                img2txts: Sequence[Sequence[int]]) -> None:
    num_images, num_texts = len(img2txts), len(txt2img)
    if tuple(shape_i2t) != (num_images, num_texts) or tuple(shape_t2i) != (num_texts, num_images):
        raise ValueError(f"score shapes {tuple(shape_i2t)} and {tuple(shape_t2i)} do not fit "
                         f"{num_images} images and {num_texts} texts")
    for image, texts in enumerate(img2txts):
        for text in texts:
            if not 0 <= text < num_texts or txt2img[text] != image:
                raise ValueError(f"img2txts[{image}] lists text {text}, whose image is not {image}")


def recall_at_k(score_i2t: torch.Tensor, score_t2i: torch.Tensor, txt2img: Sequence[int],
                img2txts: Sequence[Sequence[int]]) -> dict[str, float]:
    """LAVIS's retrieval metrics, in percent. `score_i2t` is [images, texts], `score_t2i` [texts, images];
    "txt_*" is image -> text retrieval, "img_*" text -> image; `agg_metrics` is LAVIS's model-selection
    value (the text-retrieval mean)."""
    score_i2t, score_t2i = torch.as_tensor(score_i2t), torch.as_tensor(score_t2i)
    check_index(score_i2t.shape, score_t2i.shape, txt2img, img2txts)
    image_ranks = best_ranks(score_i2t, img2txts)
    text_ranks = best_ranks(score_t2i, [[image] for image in txt2img])
    result = {f"txt_r{k}": recall(image_ranks, k) for k in RECALL_KS}
    result["txt_r_mean"] = sum(result[f"txt_r{k}"] for k in RECALL_KS) / len(RECALL_KS)
    result.update({f"img_r{k}": recall(text_ranks, k) for k in RECALL_KS})
    result["img_r_mean"] = sum(result[f"img_r{k}"] for k in RECALL_KS) / len(RECALL_KS)
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    result["agg_metrics"] = result["txt_r_mean"]
    return result


# ---------------------------------------------------------------- ITM re-rank


@dataclass(frozen=True)
class RerankedRow:
    """One query's re-ranked candidates: row index, candidate columns and their final scores."""

    row: int
    columns: list[int]
    scores: list[float]


def _rerank(sims: torch.Tensor, rows: Iterable[int], k: int,
            score: Callable[[int, torch.Tensor], torch.Tensor]) -> list[RerankedRow]:
    k = min(k, sims.shape[1])  # LAVIS would fail on a gallery smaller than k_test
    out = []
    for row in rows:
        top_sims, top_columns = sims[row].topk(k)
        final = score(row, top_columns).float().cpu() + top_sims.float().cpu()
        out.append(RerankedRow(int(row), top_columns.tolist(), final.tolist()))
    return out


def rerank_image_rows(sims: torch.Tensor, rows: Iterable[int], k: int, itm: PairScorer) -> list[RerankedRow]:
    """Image -> text: for each image in `rows`, its top-`k` texts by `sims` [images, texts], re-scored."""
    return _rerank(sims, rows, k, lambda image, texts: itm(torch.full_like(texts, image), texts))


def rerank_text_rows(sims: torch.Tensor, rows: Iterable[int], k: int, itm: PairScorer) -> list[RerankedRow]:
    """Text -> image: for each text in `rows`, its top-`k` images by `sims` [images, texts], re-scored."""
    return _rerank(sims.t(), rows, k, lambda text, images: itm(images, torch.full_like(images, text)))


def scatter_rows(rows: Iterable[RerankedRow], shape: tuple[int, int]) -> torch.Tensor:
    """The full score matrix: re-ranked candidates where given, -100 everywhere else."""
    matrix = torch.full(shape, UNRANKED_FILL)
    for row in rows:
        matrix[row.row, row.columns] = torch.tensor(row.scores, dtype=matrix.dtype)
    return matrix


def rerank_with_itm(sims: torch.Tensor, k: int, itm: PairScorer) -> tuple[torch.Tensor, torch.Tensor]:
    """(score_i2t [images, texts], score_t2i [texts, images]) from ITC similarities [images, texts], in one
    process; `mixkit eval retrieval` runs the same row functions over shards of the rows."""
    num_images, num_texts = sims.shape
    i2t = rerank_image_rows(sims, range(num_images), k, itm)
    t2i = rerank_text_rows(sims, range(num_texts), k, itm)
    return scatter_rows(i2t, (num_images, num_texts)), scatter_rows(t2i, (num_texts, num_images))
