"""Whole processes, as a user runs them: `mixkit predict` against `transformers`' own script on the same folder.

A mid-size random BLIP-2 OPT checkpoint is written by `transformers` itself (`Blip2ForConditionalGeneration` and
`Blip2Processor.save_pretrained`: ViT 8 x 384 at 224 px, Q-Former 6 x 384 with 32 queries, OPT 12 x 768 with
OPT's 50272-word vocabulary, here a word-level tokenizer so every generated id decodes to text). Each scenario
runs both sides as separate processes (start-up, imports and loading count), `--runs` times each, alternating,
and reports the median wall time, the median peak memory (max RSS) and whether the texts are identical:

- `greedy`: 16 images captioned in one batch, greedy, 32 new tokens;
- `beams`: the same 16 images with LAVIS's caption settings (5 beams, at most 29 and at least 7 new tokens,
  length penalty 1);
- `vqa`: 16 images x 5 questions, LAVIS's zero-shot VQA settings (5 beams, at most 10 new tokens, length
  penalty 0, prompt `Question: {} Short answer:`), 16 rows per generate call on both sides.

    python benchmarks/generation_vs_transformers.py [--runs 3] [--scenario greedy beams vqa]

Run it on a quiet machine: every figure is a wall time. Results go to stdout as Markdown table rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.gettempdir()) / "mixkit-generation-bench"
QUESTIONS = ("what is in the picture?", "what colour is the shape?", "how many shapes are there?",
             "is there a circle?", "where is the square?")
VQA_PROMPT = "Question: {} Short answer:"

# transformers' side: the script a user writes from the model card, timed as a whole process.
HF_SCRIPT = r'''
import json, sys
import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor
folder, task, settings, batch = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
rows = json.loads(sys.argv[5])  # [[image path, prompt], ...]
processor = Blip2Processor.from_pretrained(folder)
# transformers 5.24's processor wants an AddedToken where a saved tokenizer gives a str (the same "<image>").
from tokenizers import AddedToken
processor.image_token = AddedToken(str(processor.image_token), normalized=False, special=True)
processor.tokenizer.padding_side = "left"  # decoder-only generation of prompts of different lengths
model = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
texts = []
with torch.inference_mode():
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        images = [Image.open(path).convert("RGB") for path, _ in chunk]
        inputs = processor(images=images, text=[prompt for _, prompt in chunk], return_tensors="pt", padding=True)
        ids = model.generate(**inputs, **settings)
        new = ids[:, inputs.input_ids.shape[1]:]
        texts += [text.strip() for text in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
print(json.dumps(texts))
'''

SCENARIOS = {
    "greedy": {"settings": {"num_beams": 1, "max_new_tokens": 32}, "batch": 16,
               "mixkit": ["--num-beams", "1", "--max-new-tokens", "32", "--min-new-tokens", "0"]},
    "beams": {"settings": {"num_beams": 5, "max_new_tokens": 29, "min_new_tokens": 7, "length_penalty": 1.0},
              "batch": 16, "mixkit": []},  # mixkit's defaults for an OPT folder are LAVIS's caption settings
    "vqa": {"settings": {"num_beams": 5, "max_new_tokens": 10, "length_penalty": 0.0}, "batch": 16,
            "mixkit": []},  # LAVIS's zero-shot VQA settings are mixkit's defaults
}


def mid_size_config(vocab_size: int, image_token: int, eos: int):
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

    vision = Blip2VisionConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=6,
                               image_size=224, patch_size=14)
    qformer = Blip2QFormerConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                                 intermediate_size=1536, cross_attention_frequency=2, vocab_size=1000)
    text = OPTConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=12, ffn_dim=3072,
                     num_attention_heads=12, word_embed_proj_dim=768, max_position_embeddings=512,
                     bos_token_id=2, eos_token_id=eos, pad_token_id=1, dropout=0.0)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                       num_query_tokens=32, image_token_index=image_token)


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer with OPT's vocabulary size and special ids (pad 1, bos 2, "\\n" as the stop)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "</s>", "\n", "<image>"]
    words += sorted({w for text in [VQA_PROMPT, "a photo of", *QUESTIONS] for w in text.replace("?", " ? ")
                    .replace(":", " : ").replace("{}", " ").split()})
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="</s>",
                                   eos_token="</s>", extra_special_tokens={"image_token": "<image>"})


def build(folder: Path) -> list[Path]:
    """The checkpoint folder (written by transformers) and 16 test images, once."""
    import numpy as np
    import torch
    from PIL import Image
    from tokenizers import AddedToken
    from transformers import Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    from mixkit.testing import randomize_

    images = [folder / "images" / f"{i:02d}.png" for i in range(16)]
    if (folder / "done").is_file():
        return images
    tokenizer = word_tokenizer(50272)
    config = mid_size_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), 3)
    torch.manual_seed(0)
    model = randomize_(Blip2ForConditionalGeneration(config), seed=0, std=0.05)
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}),
                               tokenizer=tokenizer, num_query_tokens=32)
    processor.image_token = AddedToken("<image>", normalized=False, special=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "images").mkdir(exist_ok=True)
    for index, path in enumerate(images):
        pixels = np.random.RandomState(index).randint(0, 255, (200 + 7 * index, 240, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    (folder / "done").write_text("1")
    return images


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one process, measured by GNU time."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{' '.join(command[:6])} ...: {result.stderr[-3000:]}")
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return wall, peak_kib / 1024, result.stdout


def commands(scenario: str, folder: Path, images: list[Path]) -> tuple[list[str], list[str]]:
    spec = SCENARIOS[scenario]
    if scenario == "vqa":
        rows = [[str(image), VQA_PROMPT.format(q)] for image in images for q in QUESTIONS]
        ours = ["predict", "vqa", "--image", *[str(i) for i in images for _ in QUESTIONS],
                "--question", *[q for _ in images for q in QUESTIONS]]
    else:
        rows = [[str(image), ""] for image in images]
        ours = ["predict", "caption", "--image", *map(str, images)]
    mixkit = [sys.executable, "-m", "mixkit.cli", *ours, "--model", str(folder), "--batch-size", str(spec["batch"]),
              "--json", *spec["mixkit"]]
    hf = [sys.executable, "-c", HF_SCRIPT, str(folder), scenario, json.dumps(spec["settings"]), str(spec["batch"]),
          json.dumps(rows)]
    return mixkit, hf


def texts_of(output: str, side: str) -> list[str]:
    data = json.loads(output)
    if side == "hf":
        return data
    return [record.get("caption", record.get("answer")) for record in data]


def run_scenario(scenario: str, folder: Path, images: list[Path], runs: int) -> dict:
    mixkit, hf = commands(scenario, folder, images)
    measured: dict[str, list[tuple[float, float]]] = {"mixkit": [], "hf": []}
    texts: dict[str, list[str]] = {}
    for _ in range(runs):
        for side, command in (("hf", hf), ("mixkit", mixkit)):
            wall, peak, output = timed(command)
            measured[side].append((wall, peak))
            texts[side] = texts_of(output, side)
    summary = {side: (statistics.median(w for w, _ in values), statistics.median(p for _, p in values))
               for side, values in measured.items()}
    return {"scenario": scenario, "hf": summary["hf"], "mixkit": summary["mixkit"],
            "identical": texts["hf"] == texts["mixkit"], "distinct_texts": len(set(texts["mixkit"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="processes per side and scenario (median reported)")
    parser.add_argument("--scenario", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--workdir", type=Path, default=WORK, help="where the checkpoint and images are built")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = build(args.workdir)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; runs per side: {args.runs}")
    print("| scenario | transformers s | mixkit s | speed-up | transformers MiB | mixkit MiB | memory ratio | "
          "identical texts |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for scenario in args.scenario:
        row = run_scenario(scenario, args.workdir, images, args.runs)
        (hf_time, hf_peak), (our_time, our_peak) = row["hf"], row["mixkit"]
        print(f"| {scenario} | {hf_time:.2f} | {our_time:.2f} | {hf_time / our_time:.2f}x | {hf_peak:.0f} | "
              f"{our_peak:.0f} | {our_peak / hf_peak:.2f} | {row['identical']} ({row['distinct_texts']} distinct) |",
              flush=True)


if __name__ == "__main__":
    main()
