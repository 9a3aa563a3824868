"""Start-up, loading and memory as a user meets them: whole processes, mixkit against `transformers`' own script.

Builds once (under --work) a mid-size random BLIP-2 OPT folder written by `transformers` itself
(`Blip2ForConditionalGeneration.save_pretrained` + `Blip2Processor.save_pretrained`, as the Hub's folders are):
ViT 8 x 384 at 224 px, Q-Former 6 x 384 with 32 queries, OPT 12 x 768 with a 50k byte-level BPE vocabulary; and 16
images. Then runs each command as a subprocess, --runs times, and reports the median wall time and the median peak
RSS (the child's own `ru_maxrss`, from `os.wait4`):

- `mixkit --help` and `mixkit models`;
- `mixkit predict caption --model DIR --image <16 images> --num-beams 1 --max-new-tokens 32 --min-new-tokens 0
  --batch-size 16 --json`;
- the short script a `transformers` user writes (`TRANSFORMERS_SCRIPT` below): the same folder and images, greedy,
  32 new tokens, one batch of 16. The captions of both must be identical.

It prints Markdown table rows for benchmarks/RESULTS.md. Run it on a quiet machine (check `top`), by hand:

    python benchmarks/startup.py [--runs 3] [--work /tmp/mixkit-startup-bench] [--mixkit-root CHECKOUT]

`--mixkit-root` runs another checkout's mixkit (e.g. a `git archive` of the previous commit) for a before/after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUM_IMAGES = 16

TRANSFORMERS_SCRIPT = '''"""Caption images with a BLIP-2 folder as the transformers docs do: greedy, 32 new tokens."""
import json
import sys

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

folder, paths = sys.argv[1], sys.argv[2:]
processor = Blip2Processor.from_pretrained(folder)
model = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
images = [Image.open(path).convert("RGB") for path in paths]
# No prompt: generate starts from the image tokens and bos, and batch_decode drops them, as in the docs.
inputs = processor(images=images, return_tensors="pt")
with torch.inference_mode():
    ids = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=32, min_new_tokens=0)
texts = processor.batch_decode(ids, skip_special_tokens=True)
print(json.dumps([{"image": path, "caption": text.strip()} for path, text in zip(paths, texts)], indent=2))
'''


def synthetic_corpus(seed: int = 0) -> list[str]:
    """Pseudo-words from syllables: enough distinct pairs for a byte-level BPE to learn a 50k vocabulary."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiouy"] + list("aeiou")
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 5))) for _ in range(60000)]
    return [" ".join(rng.choice(words) for _ in range(12)) for _ in range(40000)]


def build_folder(directory: Path) -> None:
    """The mid-size random BLIP-2 OPT folder, written by `transformers`."""
    import torch
    from tokenizers import AddedToken
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, OPTConfig)

    from mixkit.data.tokenizers import newline_token_id, train_opt_tokenizer
    from mixkit.testing import randomize_

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = train_opt_tokenizer(synthetic_corpus(), scratch, vocab_size=50265)
    newline = newline_token_id(tokenizer)
    vision = Blip2VisionConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=6,
                               image_size=224, patch_size=14, layer_norm_eps=1e-6)
    qformer = Blip2QFormerConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                                 cross_attention_frequency=2, vocab_size=1000)
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, ffn_dim=3072,
                     num_attention_heads=12, word_embed_proj_dim=768, max_position_embeddings=512, bos_token_id=2,
                     eos_token_id=newline, pad_token_id=1, dropout=0.0)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                         num_query_tokens=32, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    # Weights wider than the default init (std 0.02), so greedy decoding has clear winners on both sides.
    model = randomize_(Blip2ForConditionalGeneration(config), seed=0, std=0.05)
    model.generation_config.eos_token_id = newline  # the Hub's OPT folders stop on "\n" too
    model.generation_config.pad_token_id = 1
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}),
                               tokenizer=tokenizer, num_query_tokens=config.num_query_tokens)
    processor.image_token = AddedToken("<image>", normalized=False, special=True)  # see mixkit.testing
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def write_images(directory: Path) -> list[Path]:
    import numpy as np
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(NUM_IMAGES):
        pixels = np.random.RandomState(index).randint(0, 255, (240 + 8 * index, 320, 3), dtype=np.uint8)
        paths.append(directory / f"image_{index:02d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def prepare(work: Path) -> tuple[Path, list[Path], Path]:
    folder, done = work / "blip2-opt-mid", work / "done"
    if not done.exists():
        build_folder(folder)
        write_images(work / "images")
        done.write_text("1")
    script = work / "transformers_caption.py"
    script.write_text(TRANSFORMERS_SCRIPT)
    return folder, sorted((work / "images").glob("*.jpg")), script


@dataclass
class Measured:
    seconds: float
    peak_mib: float
    stdout: str


def run_once(argv: list[str], env: dict[str, str]) -> Measured:
    """Wall time and the child's own peak RSS (`ru_maxrss` of exactly this process, from `wait4`)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({process.returncode}):\n"
                               f"{err.read().decode()[-3000:]}")
        return Measured(seconds, usage.ru_maxrss / 1024, out.read().decode())


def measure(argv: list[str], env: dict[str, str], runs: int) -> Measured:
    results = [run_once(argv, env) for _ in range(runs)]
    return Measured(statistics.median(r.seconds for r in results), statistics.median(r.peak_mib for r in results),
                    results[-1].stdout)


def captions(stdout: str) -> list[str]:
    return [record["caption"] for record in json.loads(stdout)]


def mixkit_command() -> list[str]:
    # The console script a user types, when this interpreter has one; it imports mixkit from PYTHONPATH.
    script = Path(sys.executable).parent / "mixkit"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mixkit.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per command; the median is reported (default 3)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mixkit-startup-bench"),
                        help="folder for the checkpoint, images and script (built once, then reused)")
    parser.add_argument("--mixkit-root", type=Path, default=REPO,
                        help="the checkout whose mixkit runs (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    folder, images, script = prepare(args.work)
    env = {**os.environ, "PYTHONPATH": str(args.mixkit_root.resolve()), "TOKENIZERS_PARALLELISM": "false"}
    mixkit = mixkit_command()
    image_args = [str(path) for path in images]
    help_run = measure([*mixkit, "--help"], env, args.runs)
    models_run = measure([*mixkit, "models"], env, args.runs)
    ours = measure([*mixkit, "predict", "caption", "--model", str(folder), "--image", *image_args, "--num-beams", "1",
                    "--max-new-tokens", "32", "--min-new-tokens", "0", "--batch-size", str(NUM_IMAGES), "--json"],
                   env, args.runs)
    theirs = measure([sys.executable, str(script), str(folder), *image_args], env, args.runs)
    same = captions(ours.stdout) == captions(theirs.stdout)
    distinct = len(set(captions(ours.stdout)))

    import torch
    import transformers

    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, {torch.get_num_threads()} threads"
    date = datetime.date.today().isoformat()
    print(f"mixkit from {args.mixkit_root.resolve()}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}; {args.runs} runs each, medians; {distinct} distinct captions of {NUM_IMAGES}")
    print("| date | machine | `mixkit --help` | `mixkit models` | predict: mixkit | predict: transformers "
          "| time ratio (transformers / mixkit) | peak RSS: mixkit | peak RSS: transformers "
          "| memory ratio (transformers / mixkit) | identical captions |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {date} | {machine} | {help_run.seconds:.2f} s, {help_run.peak_mib:.0f} MiB "
          f"| {models_run.seconds:.2f} s, {models_run.peak_mib:.0f} MiB "
          f"| {ours.seconds:.2f} s | {theirs.seconds:.2f} s "
          f"| {theirs.seconds / ours.seconds:.2f}x | {ours.peak_mib:.0f} MiB | {theirs.peak_mib:.0f} MiB "
          f"| {theirs.peak_mib / ours.peak_mib:.2f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
