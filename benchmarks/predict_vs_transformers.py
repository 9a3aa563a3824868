"""Batched caption generation: mixkit vs `transformers`' Blip2ForConditionalGeneration, same weights, one run.

A mid-size random BLIP-2 (ViT 12 x 384, Q-Former 4 x 384 with 32 queries, OPT 6 x 512; 224 px) generates
captions for the same pixels with the same settings on both sides; generated ids must be equal, and the
median wall time over several rounds is compared. Run by hand (not part of the test suite):

    python benchmarks/predict_vs_transformers.py [--batch-size 8] [--rounds 5] [--num-beams 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

from mixkit.testing import randomize_
from mixkit.models.blip2.modeling import Blip2Model

IMAGE_TOKEN = 50000


def mid_size_config() -> Blip2Config:
    vision = Blip2VisionConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                               image_size=224, patch_size=14)
    qformer = Blip2QFormerConfig(hidden_size=384, num_hidden_layers=4, num_attention_heads=6,
                                 intermediate_size=1536, cross_attention_frequency=2, vocab_size=1000)
    text = OPTConfig(vocab_size=50001, hidden_size=512, num_hidden_layers=6, ffn_dim=2048, num_attention_heads=8,
                     word_embed_proj_dim=512, max_position_embeddings=256, eos_token_id=50118 % 50001, dropout=0.0)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                       num_query_tokens=32, image_token_index=IMAGE_TOKEN)


def timed(function, rounds: int) -> tuple[float, torch.Tensor]:
    function()  # warm-up
    times, output = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        output = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="images per generate call (default 8)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side, median reported (default 5)")
    parser.add_argument("--num-beams", type=int, default=5, help="beam width (default 5, the caption reference)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens per caption (default 20)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = mid_size_config()
    reference = randomize_(Blip2ForConditionalGeneration(config), seed=0, std=0.05).to(args.device)
    ours = Blip2Model(config).eval()
    ours.load_state_dict(reference.state_dict())
    ours.to(args.device)
    pixels = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(args.device)
    bos = torch.full((args.batch_size, 1), config.text_config.bos_token_id, device=args.device)
    hf_ids = torch.cat([torch.full((args.batch_size, config.num_query_tokens), IMAGE_TOKEN, device=args.device), bos], 1)
    # min == max new tokens: both sides do exactly the same amount of decoding work.
    settings = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
                "min_new_tokens": args.max_new_tokens}
    with torch.inference_mode():
        hf_time, hf_out = timed(lambda: reference.generate(pixel_values=pixels, input_ids=hf_ids, **settings),
                                args.rounds)
        our_time, our_out = timed(lambda: ours.generate(pixels, bos, **settings), args.rounds)
    same = hf_out[:, hf_ids.shape[1]:].tolist() == our_out.tolist()
    print(f"device={args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads) "
          f"torch={torch.__version__} batch={args.batch_size} beams={args.num_beams} "
          f"new_tokens={args.max_new_tokens} rounds={args.rounds}")
    print(f"transformers: {hf_time:.3f} s   mixkit: {our_time:.3f} s   "
          f"speed-up (transformers / mixkit): {hf_time / our_time:.2f}x   identical ids: {same}")


if __name__ == "__main__":
    main()
