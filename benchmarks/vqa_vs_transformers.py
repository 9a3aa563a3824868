"""Zero-shot VQA over several questions per image: mixkit vs `transformers`, same weights and inputs, one run.

VQAv2 asks about 5 questions per image. `transformers`' Blip2ForConditionalGeneration.generate encodes the image
for every question; mixkit's evaluation encodes each image once and reuses the encoder output
(`generate(image_embeds=...)`). Same mid-size random model as predict_vs_transformers.py, reference VQA settings
(5 beams, 10 new tokens, length penalty 0); answers must be identical. Run by hand:

    python benchmarks/vqa_vs_transformers.py [--images 4] [--questions-per-image 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import Blip2ForConditionalGeneration

sys.path.insert(0, str(Path(__file__).parent))
from predict_vs_transformers import IMAGE_TOKEN, mid_size_config, timed  # noqa: E402

from mixkit.testing import randomize_  # noqa: E402
from mixkit.models.blip2.modeling import Blip2Model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="distinct images (default 4)")
    parser.add_argument("--questions-per-image", type=int, default=5, help="questions per image (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side, median reported")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = mid_size_config()
    reference = randomize_(Blip2ForConditionalGeneration(config), seed=0, std=0.05)
    ours = Blip2Model(config).eval()
    ours.load_state_dict(reference.state_dict())
    per_image = args.questions_per_image
    pixels = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    # One fixed-length "question prompt" per question (token ids), so no padding enters either side.
    prompts = torch.randint(4, 1000, (args.images * per_image, 8), generator=torch.Generator().manual_seed(2))
    prompts[:, 0] = config.text_config.bos_token_id
    settings = {"num_beams": 5, "max_new_tokens": 10, "min_new_tokens": 10, "length_penalty": 0.0}
    hf_ids = torch.cat([torch.full((len(prompts), config.num_query_tokens), IMAGE_TOKEN), prompts], 1)

    def transformers_side() -> torch.Tensor:
        repeated = pixels.repeat_interleave(per_image, dim=0)  # the image goes in with every question
        return reference.generate(pixel_values=repeated, input_ids=hf_ids, **settings)[:, hf_ids.shape[1]:]

    def mixkit_side() -> torch.Tensor:
        image_embeds = ours.encode_image(pixels).repeat_interleave(per_image, dim=0)  # encoded once per image
        return ours.generate(input_ids=prompts, image_embeds=image_embeds, **settings)

    with torch.inference_mode():
        hf_time, hf_out = timed(transformers_side, args.rounds)
        our_time, our_out = timed(mixkit_side, args.rounds)
    print(f"cpu threads={torch.get_num_threads()} torch={torch.__version__} images={args.images} "
          f"questions/image={per_image} beams=5 new_tokens=10 rounds={args.rounds}")
    print(f"transformers: {hf_time:.3f} s   mixkit: {our_time:.3f} s   speed-up: {hf_time / our_time:.2f}x   "
          f"identical answers: {hf_out.tolist() == our_out.tolist()}")


if __name__ == "__main__":
    main()
