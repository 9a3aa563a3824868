"""`mixkit eval retrieval`: COCO / Flickr30k image-text retrieval with a stage-1 BLIP-2 checkpoint.

Records are the Karpathy eval files LAVIS uses (`coco_karpathy_test.json`, `flickr30k_test.json`):
`[{"image": path, "caption": [texts], "image_id"?}]`, one image per record, in file order; captions
are cleaned as LAVIS's `blip_caption` does and tokenized to at most 35 tokens. Every process encodes
the whole gallery (as LAVIS does); the ITM re-rank rows are shared out over the `torchrun` processes
and gathered on rank 0, so the scores are those of one process. Output, in `--output-dir`:

  {split}_retrieval_result.json  per image and per text: the 1-based rank of its ground truth and the
                                 top-10 retrieved (image ids / text indices)
  metrics.json                   R@1/5/10 after the ITM re-rank ("scores") and from ITC alone
                                 ("itc_scores"), settings, versions

`--model` is a stage-1 checkpoint folder: config.json, model.safetensors, the Q-Former's BERT
tokenizer files and preprocessor_config.json. LAVIS's BLIP-2 retrieval configs use k_test 128 for
both COCO and Flickr30k (BLIP's used 256 for COCO).

Any retrieval pipeline works (`load_pipeline(model, task="retrieval")`: `tokenize`, `text_features(input_ids,
attention_mask)`, `image_features`, `itc_similarity`, and `itm_logits` for the re-rank). Without `itm_logits`
(CLIP, EVA-CLIP) the ranks come from the ITC cosine alone: "scores" equal "itc_scores", "reranked" is false and
`--k-test` is unused; texts are still cleaned as above.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mixkit.data.text import clean_caption
from mixkit.eval.command import check_config, dataclass_from_args, load_model, run_evaluation, standalone_main
from mixkit.eval.config import RetrievalEvalConfig
from mixkit.eval.inputs import EvalInputError, check_images_exist, load_json_file, record_image_id
from mixkit.eval.reporting import format_table, write_outputs
from mixkit.eval.retrieval import (
    RerankedRow,
    best_ranks,
    recall_at_k,
    rerank_image_rows,
    rerank_text_rows,
    scatter_rows,
    sorted_columns,
)
from mixkit.pipelines.common import batches
from mixkit.utils.distributed import DistContext, gather, shard
from mixkit.utils.progress import progress_bar
from mixkit.utils.versions import library_versions

if TYPE_CHECKING:  # the model stack loads only when a run starts
    from transformers import BatchEncoding

    from mixkit.pipelines.blip2_retrieval import Blip2RetrievalPipeline

TOP_SAVED = 10  # retrieved candidates written per query
SCORE_ORDER = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean")


# ---------------------------------------------------------------- the gallery


@dataclass(frozen=True)
class Gallery:
    """Images and texts of an eval file, and which texts describe which image (LAVIS's indexing)."""

    image_ids: list[Hashable]
    image_paths: list[Path]
    texts: list[str]
    txt2img: list[int]
    img2txts: list[list[int]]


def _captions(record: dict, index: int, source: str) -> list[str]:
    captions = record.get("caption")
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise EvalInputError(f"{source}: record {index}: 'caption' must be a non-empty list of strings")
    return captions


def parse_gallery(data: object, image_root: Path, source: str) -> Gallery:
    if not isinstance(data, list) or not data:
        raise EvalInputError(f"{source}: expected a non-empty list of {{'image', 'caption': [texts]}} records")
    gallery = Gallery([], [], [], [], [])
    for index, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise EvalInputError(f"{source}: record {index}: needs an 'image' path (a string)")
        gallery.image_ids.append(record_image_id(record, index, source))
        gallery.image_paths.append(Path(image_root) / record["image"])
        first = len(gallery.texts)
        gallery.texts.extend(clean_caption(c) for c in _captions(record, index, source))
        gallery.img2txts.append(list(range(first, len(gallery.texts))))
        gallery.txt2img.extend([index] * (len(gallery.texts) - first))
    return gallery


# ---------------------------------------------------------------- the model


@dataclass
class GalleryFeatures:
    image_embeds: torch.Tensor  # [images, patches, vision hidden] on the CPU, for ITM
    sims: torch.Tensor  # [images, texts] ITC: best-query cosine, no temperature (as LAVIS ranks)
    input_ids: torch.Tensor  # [texts, length]
    attention_mask: torch.Tensor


def _text_features(pipeline: Any, tokens: BatchEncoding, batch_size: int) -> torch.Tensor:
    """The gallery's text features, `batch_size` texts per encoder pass (the retrieval pipeline protocol:
    `tokenize`, `text_features(input_ids, attention_mask)`, `image_features`, `itc_similarity`)."""
    return torch.cat([
        pipeline.text_features(tokens.input_ids[s : s + batch_size], tokens.attention_mask[s : s + batch_size])
        for s in range(0, len(tokens.input_ids), batch_size)
    ])


def encode_gallery(pipeline: Blip2RetrievalPipeline, gallery: Gallery, batch_size: int) -> GalleryFeatures:
    tokens = pipeline.tokenize(gallery.texts)
    text_feats = _text_features(pipeline, tokens, batch_size)
    embeds, sims = [], []
    for paths in batches(gallery.image_paths, batch_size):
        features = pipeline.image_features(paths)
        embeds.append(features.image_embeds.cpu())  # the gallery's ViT outputs may not fit on the GPU
        sims.append(pipeline.itc_similarity(features.image_feats, text_feats).float().cpu())
    return GalleryFeatures(torch.cat(embeds), torch.cat(sims), tokens.input_ids, tokens.attention_mask)


class ItmScorer:
    """ITM match logit (mean over query positions) of (image, text) pairs of the gallery: LAVIS `compute_itm`."""

    def __init__(self, pipeline: Blip2RetrievalPipeline, features: GalleryFeatures):
        self.pipeline, self.features = pipeline, features

    def __call__(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        f = self.features
        images, texts = images.cpu(), texts.cpu()
        return self.pipeline.itm_logits(f.image_embeds[images], f.input_ids[texts], f.attention_mask[texts])


# ---------------------------------------------------------------- re-rank over processes


def _progress(rows: Sequence[int], ctx: DistContext, what: str) -> Iterable[int]:
    return progress_bar(rows, disable=not ctx.is_main, desc=what, unit="row")


def rerank_sharded(features: GalleryFeatures, k: int, itm: ItmScorer,
                   ctx: DistContext) -> tuple[torch.Tensor, torch.Tensor] | None:
    """This rank's share of the rows of both directions, gathered: (score_i2t, score_t2i) on rank 0."""
    num_images, num_texts = features.sims.shape
    mine_i2t = shard(range(num_images), ctx)
    mine_t2i = shard(range(num_texts), ctx)
    records = [{"direction": "i2t", **asdict(row)}
               for row in rerank_image_rows(features.sims, _progress(mine_i2t, ctx, "itm i2t"), k, itm)]
    records += [{"direction": "t2i", **asdict(row)}
                for row in rerank_text_rows(features.sims, _progress(mine_t2i, ctx, "itm t2i"), k, itm)]
    gathered = gather(records, ctx)  # floats travel as Python floats: the fp32 scores survive exactly
    if not ctx.is_main:
        return None

    def rows(direction: str) -> list[RerankedRow]:
        return [RerankedRow(r["row"], r["columns"], r["scores"]) for r in gathered if r["direction"] == direction]

    return scatter_rows(rows("i2t"), (num_images, num_texts)), scatter_rows(rows("t2i"), (num_texts, num_images))


# ---------------------------------------------------------------- results


def result_file(gallery: Gallery, score_i2t: torch.Tensor, score_t2i: torch.Tensor) -> dict:
    """Per query: 1-based rank of its ground truth (null: an image without texts) and the top retrieved."""
    image_ranks = best_ranks(score_i2t, gallery.img2txts)
    text_ranks = best_ranks(score_t2i, [[image] for image in gallery.txt2img])
    top_texts = sorted_columns(score_i2t)[:, :TOP_SAVED].tolist()
    top_images = sorted_columns(score_t2i)[:, :TOP_SAVED].tolist()
    images = [
        {"image_id": gallery.image_ids[i], "image": str(gallery.image_paths[i]),
         "rank": int(image_ranks[i]) + 1 if gallery.img2txts[i] else None, "top_texts": top_texts[i]}
        for i in range(len(gallery.image_ids))
    ]
    texts = [
        {"text_index": t, "text": gallery.texts[t], "image_id": gallery.image_ids[gallery.txt2img[t]],
         "rank": int(text_ranks[t]) + 1, "top_images": [gallery.image_ids[i] for i in top_images[t]]}
        for t in range(len(gallery.texts))
    ]
    return {"images": images, "texts": texts}


def build_metrics(config: RetrievalEvalConfig, gallery: Gallery, scores: dict, itc_scores: dict,
                  pipeline: Blip2RetrievalPipeline, ctx: DistContext) -> dict:
    from mixkit.pipelines.blip2_retrieval import MAX_TEXT_LENGTH

    num_images, num_texts = len(gallery.image_ids), len(gallery.texts)
    return {
        "task": "retrieval",
        "split": config.split,
        "model": str(Path(config.model)),
        "scores": scores,
        "itc_scores": itc_scores,
        "num_images": num_images,
        "num_texts": num_texts,
        "k_test": config.k_test,
        "k_used": {"i2t": min(config.k_test, num_texts), "t2i": min(config.k_test, num_images)},
        "max_text_length": MAX_TEXT_LENGTH,
        "image_size": pipeline.transform.config.image_size,
        "batch_size": config.batch_size,
        "world_size": ctx.world_size,
        "versions": library_versions(),
    }


def itc_similarities(pipeline: Any, gallery: Gallery, batch_size: int) -> torch.Tensor:
    """[images, texts] ITC similarities of a pipeline without an ITM head (CLIP, EVA-CLIP: `image_features`
    are the normalised embeddings themselves)."""
    text_feats = _text_features(pipeline, pipeline.tokenize(gallery.texts), batch_size)
    sims = [pipeline.itc_similarity(pipeline.image_features(paths), text_feats).float().cpu()
            for paths in batches(gallery.image_paths, batch_size)]
    return torch.cat(sims)


def evaluate_itc_only(config: RetrievalEvalConfig, gallery: Gallery, pipeline: Any, ctx: DistContext) -> dict | None:
    """CLIP-style retrieval: ranks from the ITC similarities alone (no re-rank, so `--k-test` is unused); every
    process encodes the gallery as in the ITM path, rank 0 writes."""
    sims = itc_similarities(pipeline, gallery, config.batch_size)
    if not ctx.is_main:
        return None
    scores = recall_at_k(sims, sims.t(), gallery.txt2img, gallery.img2txts)
    metrics = {"task": "retrieval", "split": config.split, "model": str(Path(config.model)), "scores": scores,
               "itc_scores": scores, "reranked": False, "num_images": len(gallery.image_ids),
               "num_texts": len(gallery.texts), "k_test": None, "batch_size": config.batch_size,
               "world_size": ctx.world_size, "versions": library_versions()}
    return write_outputs(config.output_dir, f"{config.split}_retrieval_result.json",
                         result_file(gallery, sims, sims.t()), metrics)


def score_table(metrics: dict) -> str:
    rows: list[tuple[str, object]] = [("images", metrics["num_images"]), ("texts", metrics["num_texts"])]
    rows += [(name, metrics["scores"][name]) for name in SCORE_ORDER]
    rows.append(("r_mean (ITC only)", metrics["itc_scores"]["r_mean"]))
    return format_table(rows, f"Retrieval {metrics['split']}: {metrics['model']}")


def evaluate_retrieval(config: RetrievalEvalConfig, ctx: DistContext | None = None) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    from mixkit.pipelines.auto import load_pipeline

    ctx = ctx or DistContext()
    check_config(config)
    gallery = parse_gallery(load_json_file(config.records, "--records"), config.image_root, str(config.records))
    check_images_exist(gallery.image_paths)
    pipeline = load_model(lambda: load_pipeline(config.model, task="retrieval", device=ctx.device(config.device)),
                          config.model)
    if not hasattr(pipeline, "itm_logits"):
        return evaluate_itc_only(config, gallery, pipeline, ctx)
    features = encode_gallery(pipeline, gallery, config.batch_size)
    reranked = rerank_sharded(features, config.k_test, ItmScorer(pipeline, features), ctx)
    if reranked is None:
        return None
    score_i2t, score_t2i = reranked
    scores = recall_at_k(score_i2t, score_t2i, gallery.txt2img, gallery.img2txts)
    itc_scores = recall_at_k(features.sims, features.sims.t(), gallery.txt2img, gallery.img2txts)
    metrics = build_metrics(config, gallery, scores, itc_scores, pipeline, ctx)
    return write_outputs(config.output_dir, f"{config.split}_retrieval_result.json",
                         result_file(gallery, score_i2t, score_t2i), metrics)


def run(args: argparse.Namespace) -> int:
    """`mixkit eval retrieval`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return run_evaluation("retrieval", evaluate_retrieval, dataclass_from_args(RetrievalEvalConfig, args),
                          score_table)


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main(RetrievalEvalConfig, run, "retrieval", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
