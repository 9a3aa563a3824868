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
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from mixkit.data.text import clean_caption
from mixkit.eval import runner
from mixkit.eval.caption_eval import image_id_of
from mixkit.eval.retrieval import (
    RerankedRow,
    best_ranks,
    recall_at_k,
    rerank_image_rows,
    rerank_text_rows,
    scatter_rows,
    sorted_columns,
)
from mixkit.eval.runner import DistContext, EvalInputError

if TYPE_CHECKING:  # the model stack loads only when a run starts
    from transformers import PreTrainedTokenizerBase

    from mixkit.data.transforms import EvalImageTransform
    from mixkit.models.blip2.stage1 import Blip2Stage1Model

MAX_TEXT_LENGTH = 35  # LAVIS compute_sim_matrix tokenizes retrieval texts to 35 tokens
DEFAULT_K_TEST = 128  # LAVIS blip2 ret_coco_eval.yaml and ret_flickr_eval.yaml
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
        gallery.image_ids.append(image_id_of(record, index))
        gallery.image_paths.append(Path(image_root) / record["image"])
        first = len(gallery.texts)
        gallery.texts.extend(clean_caption(c) for c in _captions(record, index, source))
        gallery.img2txts.append(list(range(first, len(gallery.texts))))
        gallery.txt2img.extend([index] * (len(gallery.texts) - first))
    return gallery


# ---------------------------------------------------------------- the model


@dataclass
class Stage1Checkpoint:
    model: Blip2Stage1Model
    tokenizer: PreTrainedTokenizerBase
    transform: EvalImageTransform
    device: torch.device


def load_checkpoint(directory: Path, device: str | None) -> Stage1Checkpoint:
    """A complete stage-1 folder, checked before anything heavy loads; every gap is an input error."""
    from transformers import AutoTokenizer

    from mixkit.apps.predictor import pick_device
    from mixkit.data.transforms import EvalImageTransform, ImageProcessorConfig
    from mixkit.models.blip2.stage1 import Blip2Stage1Model
    from mixkit.models.hub import check_checkpoint_dir

    try:
        files = check_checkpoint_dir(directory)
        if not files.tokenizer:
            raise FileNotFoundError(f"{directory}: no tokenizer files (the Q-Former's BERT tokenizer)")
        processor = ImageProcessorConfig.load(directory)
        model = Blip2Stage1Model.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise EvalInputError(f"--model {directory}: {error}") from None
    if len(tokenizer) > model.config.qformer_config.vocab_size:
        raise EvalInputError(f"--model {directory}: the tokenizer has {len(tokenizer)} tokens, the Q-Former "
                             f"vocabulary {model.config.qformer_config.vocab_size}")
    target = pick_device(device)
    return Stage1Checkpoint(model.to(target).eval(), tokenizer, EvalImageTransform(processor), target)


@dataclass
class GalleryFeatures:
    image_embeds: torch.Tensor  # [images, patches, vision hidden] on the CPU, for ITM
    sims: torch.Tensor  # [images, texts] ITC: best-query cosine, no temperature (as LAVIS ranks)
    input_ids: torch.Tensor  # [texts, length]
    attention_mask: torch.Tensor


@torch.no_grad()
def encode_gallery(ckpt: Stage1Checkpoint, gallery: Gallery, batch_size: int) -> GalleryFeatures:
    from mixkit.data.transforms import load_image

    tokens = ckpt.tokenizer(gallery.texts, padding="longest", truncation=True, max_length=MAX_TEXT_LENGTH,
                            padding_side="right", return_tensors="pt")
    text_feats = torch.cat([
        ckpt.model.text_features(tokens.input_ids[s : s + batch_size].to(ckpt.device),
                                 tokens.attention_mask[s : s + batch_size].to(ckpt.device))
        for s in range(0, len(gallery.texts), batch_size)
    ])
    embeds, sims = [], []
    for batch in runner.chunks(gallery.image_paths, batch_size):
        pixels = torch.stack([ckpt.transform(load_image(path)) for path in batch]).to(ckpt.device)
        features = ckpt.model.encode_image_features(pixels)
        embeds.append(features.image_embeds.cpu())  # the gallery's ViT outputs may not fit on the GPU
        sims.append(ckpt.model.best_query_cosine(features.image_feats, text_feats).float().cpu())
    return GalleryFeatures(torch.cat(embeds), torch.cat(sims), tokens.input_ids, tokens.attention_mask)


class ItmScorer:
    """ITM match logit (mean over query positions) of (image, text) pairs of the gallery: LAVIS `compute_itm`."""

    def __init__(self, ckpt: Stage1Checkpoint, features: GalleryFeatures):
        self.ckpt, self.features = ckpt, features

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        device, f = self.ckpt.device, self.features
        images, texts = images.cpu(), texts.cpu()
        logits = self.ckpt.model.itm_logits(f.image_embeds[images].to(device), f.input_ids[texts].to(device),
                                            f.attention_mask[texts].to(device))
        return logits[:, 1].float().cpu()


# ---------------------------------------------------------------- re-rank over processes


def _progress(rows: Sequence[int], ctx: DistContext, what: str) -> Iterable[int]:
    return tqdm(rows, disable=not ctx.is_main, file=sys.stderr, desc=what, unit="row")


def rerank_sharded(features: GalleryFeatures, k: int, itm: ItmScorer,
                   ctx: DistContext) -> tuple[torch.Tensor, torch.Tensor] | None:
    """This rank's share of the rows of both directions, gathered: (score_i2t, score_t2i) on rank 0."""
    num_images, num_texts = features.sims.shape
    mine_i2t = runner.shard(range(num_images), ctx)
    mine_t2i = runner.shard(range(num_texts), ctx)
    records = [{"direction": "i2t", **asdict(row)}
               for row in rerank_image_rows(features.sims, _progress(mine_i2t, ctx, "itm i2t"), k, itm)]
    records += [{"direction": "t2i", **asdict(row)}
                for row in rerank_text_rows(features.sims, _progress(mine_t2i, ctx, "itm t2i"), k, itm)]
    gathered = runner.gather(records, ctx)  # floats travel as Python floats: the fp32 scores survive exactly
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


def build_metrics(args: argparse.Namespace, gallery: Gallery, scores: dict, itc_scores: dict,
                  ckpt: Stage1Checkpoint, ctx: DistContext) -> dict:
    num_images, num_texts = len(gallery.image_ids), len(gallery.texts)
    return {
        "task": "retrieval",
        "split": args.split,
        "model": str(args.model),
        "scores": scores,
        "itc_scores": itc_scores,
        "num_images": num_images,
        "num_texts": num_texts,
        "k_test": args.k_test,
        "k_used": {"i2t": min(args.k_test, num_texts), "t2i": min(args.k_test, num_images)},
        "max_text_length": MAX_TEXT_LENGTH,
        "image_size": ckpt.transform.config.image_size,
        "batch_size": args.batch_size,
        "world_size": ctx.world_size,
        "versions": runner.versions(),
    }


def score_table(metrics: dict) -> str:
    rows: list[tuple[str, object]] = [("images", metrics["num_images"]), ("texts", metrics["num_texts"])]
    rows += [(name, metrics["scores"][name]) for name in SCORE_ORDER]
    rows.append(("r_mean (ITC only)", metrics["itc_scores"]["r_mean"]))
    return runner.format_table(rows, f"Retrieval {metrics['split']}: {metrics['model']}")


def check_arguments(args: argparse.Namespace) -> None:
    for name in ("k_test", "batch_size"):
        if getattr(args, name) < 1:
            raise EvalInputError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")


def evaluate(args: argparse.Namespace, ctx: DistContext) -> dict | None:
    """The whole run; the metrics on rank 0, None on the other ranks."""
    check_arguments(args)
    gallery = parse_gallery(runner.load_json_file(args.records, "--records"), args.image_root, str(args.records))
    runner.check_images_exist(gallery.image_paths)
    ckpt = load_checkpoint(Path(args.model), ctx.device(args.device))
    features = encode_gallery(ckpt, gallery, args.batch_size)
    reranked = rerank_sharded(features, args.k_test, ItmScorer(ckpt, features), ctx)
    if reranked is None:
        return None
    score_i2t, score_t2i = reranked
    scores = recall_at_k(score_i2t, score_t2i, gallery.txt2img, gallery.img2txts)
    itc_scores = recall_at_k(features.sims, features.sims.t(), gallery.txt2img, gallery.img2txts)
    output_dir = Path(args.output_dir)
    runner.write_json(output_dir / f"{args.split}_retrieval_result.json", result_file(gallery, score_i2t, score_t2i))
    metrics = build_metrics(args, gallery, scores, itc_scores, ckpt, ctx)
    runner.write_json(output_dir / "metrics.json", metrics)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mixkit eval retrieval`."""
    parser.add_argument("--model", required=True, type=Path,
                        help="stage-1 checkpoint folder (config, weights, Q-Former tokenizer, preprocessor config)")
    parser.add_argument("--records", required=True, type=Path,
                        help="Karpathy eval records JSON: [{'image', 'caption': [texts], 'image_id'?}]")
    parser.add_argument("--image-root", required=True, type=Path, help="folder the records' image paths are under")
    parser.add_argument("--output-dir", required=True, type=Path, help="where the result and metrics files go")
    parser.add_argument("--k-test", type=int, default=DEFAULT_K_TEST,
                        help=f"ITC candidates re-ranked by ITM per query (default {DEFAULT_K_TEST}, LAVIS's BLIP-2 "
                             "COCO and Flickr30k setting)")
    parser.add_argument("--split", default="test",
                        help="names the result file {split}_retrieval_result.json (default test)")
    parser.add_argument("--batch-size", type=int, default=32, help="images or texts per encoder pass (default 32)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def run(args: argparse.Namespace) -> int:
    """`mixkit eval retrieval`: metrics JSON on stdout (rank 0); errors as one line on stderr, exit code 2."""
    return runner.run_evaluation("retrieval", evaluate, score_table, args, ())


def main(argv: Sequence[str] | None = None) -> int:
    return runner.standalone_main("retrieval", add_arguments, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
