"""Training throughput against LAVIS itself: same model, same weights, same data and batch, on this CPU.

LAVIS (salesforce/LAVIS 506965b) does not install with current packages (see ../shared/REFERENCE.md). This
script builds a scratch copy of the few LAVIS modules BLIP-2 training needs from a LAVIS checkout you give it
(nothing of LAVIS is part of mixkit), stubs the imports those modules make but training does not use (timm
helpers, the registry, the download helper), and runs it under a separate Python whose environment has LAVIS's
pinned `transformers==4.33.2`:

    python3 -m venv /tmp/lavis-venv
    /tmp/lavis-venv/bin/pip install torch==2.13.0 transformers==4.33.2 omegaconf pillow packaging numpy safetensors
    git clone https://github.com/salesforce/LAVIS && git -C LAVIS checkout 506965b
    python benchmarks/training_vs_lavis.py --lavis-repo LAVIS --lavis-python /tmp/lavis-venv/bin/python \
        [--stages stage1 stage2 caption] [--batch 8] [--steps 8] [--runs 2]

The model is mid-size and random: EVA ViT 8 x 384 at 224 px (patch 14), Q-Former 6 x 384 with 32 queries and a
30523-token BERT vocabulary (BERT's 30522 + [DEC]), as LAVIS builds it (cross-attention every 2nd layer,
dropout 0.1), and for stages 2 and caption an OPT 12 x 768 with OPT's 50272-word vocabulary and dropout 0.1, run in
fp32 on both sides (LAVIS loads OPT in fp16, which a CPU cannot train with). LAVIS initialises the model; its
weights go to mixkit through `mixkit convert`'s key map, so both sides train the same network. Each stage runs
`--steps` optimisation steps of AdamW (lr 1e-4, weight decay 0.05, LAVIS's defaults) on one fixed batch; the
first two steps are warm-up, the median of the others is the step time:
- `stage1`: ITC + ITM + ITG, ViT frozen (`Blip2Qformer`);
- `stage2`: language modelling through the frozen OPT, ViT frozen, no prompt (`Blip2OPT`);
- `caption`: caption fine-tuning, the ViT trained too, prompt "a photo of " (`Blip2OPT(freeze_vit=False)`).

Before timing, each side computes the loss once in eval mode (no dropout) on the same batch, and the two losses
are printed side by side. Both sides run in a one-process gloo group (LAVIS's stage 1 asks torch.distributed for
its rank). Each side is a separate process with 2 threads; peak memory is max RSS.

Results go to stdout as Markdown table rows. Run it on a quiet machine.
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
import textwrap
from pathlib import Path

WORK = Path(tempfile.gettempdir()) / "mixkit-training-bench"
VISION = {"hidden_size": 384, "layers": 8, "heads": 6, "mlp_ratio": 4.3637, "image_size": 224, "patch_size": 14}
QFORMER = {"hidden_size": 384, "layers": 6, "heads": 6, "intermediate_size": 1536, "queries": 32}
BERT_VOCAB_SIZE = 30522
CAPTIONS = ("a red circle above a blue square", "two green triangles on a white background",
            "a small yellow square to the left of a large circle", "three shapes in a row",
            "a blue circle", "a purple triangle below a red square", "an orange circle next to a green square",
            "a large black triangle")
OPT = {"hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 50272,
       "max_position_embeddings": 2048, "word_embed_proj_dim": 768, "dropout": 0.1, "pad_token_id": 1,
       "bos_token_id": 2, "eos_token_id": 2}
CAPTION_PROMPT = "a photo of "
LAVIS_FILES = ("lavis/models/blip2_models/blip2.py", "lavis/models/blip2_models/blip2_qformer.py",
               "lavis/models/blip2_models/blip2_opt.py",
               "lavis/models/blip2_models/Qformer.py", "lavis/models/eva_vit.py", "lavis/models/base_model.py",
               "lavis/models/blip_models/blip_outputs.py", "lavis/common/dist_utils.py")

# Stand-ins for the imports LAVIS's BLIP-2 modules make at import time but training never calls.
STUBS = {
    "timm/__init__.py": "",
    "timm/models/__init__.py": "",
    "timm/models/hub.py": "def download_cached_file(*args, **kwargs):\n    raise RuntimeError('offline')\n",
    "timm/models/registry.py": "def register_model(fn):\n    return fn\n",
    "timm/models/layers.py": textwrap.dedent('''
        import collections.abc, torch
        def to_2tuple(x):
            return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)
        def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
            return torch.nn.init.trunc_normal_(tensor, mean, std, a, b)
        def drop_path(x, drop_prob=0.0, training=False):
            if drop_prob == 0.0 or not training:
                return x
            keep = 1 - drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep
    '''),
    "lavis/__init__.py": "",
    "lavis/common/__init__.py": "",
    "lavis/common/utils.py": "def is_url(x):\n    return False\ndef get_abs_path(p):\n    return p\n",
    "lavis/common/logger.py": "class MetricLogger:\n    pass\n",
    "lavis/common/registry.py": textwrap.dedent('''
        class _Registry:
            def register_model(self, name):
                return lambda cls: cls
            def get_path(self, name):
                return ""
        registry = _Registry()
    '''),
    "lavis/models/__init__.py": "",
    "lavis/models/clip_vit.py": "def create_clip_vit_L(*args, **kwargs):\n    raise NotImplementedError\n",
    "lavis/models/blip2_models/__init__.py": "",
    "lavis/models/blip_models/__init__.py": "",
}

# LAVIS's side, run under the LAVIS Python: build Blip2Qformer at the benchmark's size, save its initial weights
# (first run only), then time training steps.
LAVIS_SCRIPT = r'''
import json, resource, statistics, sys, time
from functools import partial
import torch
torch.set_num_threads(2)
from safetensors.torch import load_file, save_file
from transformers import BertTokenizer
import lavis.models.blip2_models.blip2 as blip2
from lavis.models.blip2_models import Qformer
from lavis.models.eva_vit import VisionTransformer
from lavis.models.blip2_models import blip2_opt
from lavis.models.blip2_models.blip2_qformer import Blip2Qformer

spec = json.loads(sys.argv[1])
vision, qformer = spec["vision"], spec["qformer"]
# LAVIS's stage 1 asks torch.distributed for its rank, so both sides run in a one-process gloo group.
torch.distributed.init_process_group("gloo", init_method="file://" + spec["rendezvous"] + str(time.time_ns()),
                                     rank=0, world_size=1)

class LocalBert(BertTokenizer):  # LAVIS names "bert-base-uncased"; the benchmark's vocabulary is local
    @classmethod
    def from_pretrained(cls, name, **kwargs):
        return super().from_pretrained(spec["tokenizer"], **kwargs)

def bert_config(name, **kwargs):
    return Qformer.BertConfig(hidden_size=qformer["hidden_size"], num_hidden_layers=qformer["layers"],
                              num_attention_heads=qformer["heads"], intermediate_size=qformer["intermediate_size"],
                              vocab_size=spec["bert_vocab_size"])

def eva_vit(img_size, drop_path_rate, use_checkpoint, precision):
    return VisionTransformer(img_size=img_size, patch_size=vision["patch_size"], use_mean_pooling=False,
                             embed_dim=vision["hidden_size"], depth=vision["layers"], num_heads=vision["heads"],
                             mlp_ratio=vision["mlp_ratio"], qkv_bias=True, drop_path_rate=drop_path_rate,
                             norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_checkpoint=use_checkpoint)

blip2.BertTokenizer = LocalBert
Qformer.BertConfig.from_pretrained = staticmethod(bert_config)
Qformer.BertLMHeadModel.from_pretrained = classmethod(lambda cls, name, config: cls(config))
blip2.create_eva_vit_g = eva_vit

class Fp32OPT(blip2_opt.OPTForCausalLM):  # LAVIS loads OPT in fp16; both sides train in fp32 here
    @classmethod
    def from_pretrained(cls, name, **kwargs):
        return super().from_pretrained(name, **dict(kwargs, torch_dtype=torch.float32))

blip2_opt.OPTForCausalLM = Fp32OPT
torch.manual_seed(0)
stage = spec["stage"]
if stage == "stage1":
    model = Blip2Qformer(img_size=vision["image_size"], vit_precision="fp32", num_query_token=qformer["queries"])
else:
    model = blip2_opt.Blip2OPT(img_size=vision["image_size"], vit_precision="fp32", freeze_vit=stage == "stage2",
                               num_query_token=qformer["queries"], opt_model=spec["opt"],
                               prompt=spec["prompt"].rstrip())  # LAVIS's caption config: "a photo of"
if spec["save_weights"]:
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, spec["weights"])
else:
    model.load_state_dict(load_file(spec["weights"]))
batch = load_file(spec["batch"])
# LAVIS's caption processor puts "a photo of " in front of each caption; the model masks the length of its own
# prompt, "a photo of" (lavis/configs/models/blip2/blip2_caption_opt2.7b.yaml and caption_coco_opt2.7b.yaml).
samples = {"image": batch["pixel_values"], "text_input": [spec["prompt"] + text for text in spec["captions"]]}
loss_of = lambda output: output.loss if stage == "stage1" else output["loss"]  # noqa: E731
model.eval()
with torch.no_grad():
    torch.manual_seed(1)
    eval_loss = loss_of(model(samples)).item()
model.train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)
times = []
for step in range(spec["steps"]):
    start = time.perf_counter()
    loss = loss_of(model(samples))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"eval_loss": eval_loss, "step_s": statistics.median(times[2:]),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

# mixkit's side: the same weights through the LAVIS key map, the same batch, mixkit's stage tasks.
MIXKIT_SCRIPT = r'''
import json, resource, statistics, sys, time
import torch
torch.set_num_threads(2)
from safetensors.torch import load_file
from transformers import AutoTokenizer, Blip2Config, OPTConfig
from mixkit.models.blip2.convert_lavis import convert_lavis_state_dict
from mixkit.models.blip2.modeling import Blip2Model
from mixkit.models.blip2.stage1 import Blip2Stage1Model
from mixkit.train.collators import Stage1Collator, Stage2Collator, to_batch
from mixkit.train.stage1_task import Stage1Batch, Stage1Task
from mixkit.train.stage2_task import Stage2Batch, Stage2Task
from mixkit.train.stages import cast_frozen_parts

spec = json.loads(sys.argv[1])
vision, qformer, stage = spec["vision"], spec["qformer"], spec["stage"]
# LAVIS's stage 1 asks torch.distributed for its rank, so both sides run in a one-process gloo group.
torch.distributed.init_process_group("gloo", init_method="file://" + spec["rendezvous"] + str(time.time_ns()),
                                     rank=0, world_size=1)
bert = AutoTokenizer.from_pretrained(spec["tokenizer"])
bert.add_special_tokens({"bos_token": "[DEC]"})
text_config = OPTConfig.from_pretrained(spec["opt"]).to_dict() if stage != "stage1" else None
config = Blip2Config(
    vision_config={"hidden_size": vision["hidden_size"], "num_hidden_layers": vision["layers"],
                   "num_attention_heads": vision["heads"], "image_size": vision["image_size"],
                   "patch_size": vision["patch_size"], "layer_norm_eps": 1e-6,
                   "intermediate_size": int(vision["hidden_size"] * vision["mlp_ratio"])},
    qformer_config={"hidden_size": qformer["hidden_size"], "num_hidden_layers": qformer["layers"],
                    "num_attention_heads": qformer["heads"], "intermediate_size": qformer["intermediate_size"],
                    "vocab_size": len(bert), "encoder_hidden_size": vision["hidden_size"],
                    "use_qformer_text_input": stage == "stage1"},
    text_config=text_config, num_query_tokens=qformer["queries"], image_text_hidden_size=256)
kind = "stage1" if stage == "stage1" else "opt"
report = convert_lavis_state_dict(load_file(spec["weights"]), kind)
model = Blip2Stage1Model(config) if stage == "stage1" else Blip2Model(config)
model.load_state_dict(report.state_dict, strict=True)
if stage != "caption":
    model.lock_image_tower()
if stage != "stage1":
    model.lock_language_model(keep_dropout=True)  # LAVIS leaves the frozen OPT in train mode
if spec["frozen_dtype"] == "bf16":  # what `mixkit train --frozen_dtype bf16` does
    cast_frozen_parts(model, torch.bfloat16)
pixels = load_file(spec["batch"])["pixel_values"]
samples = [{"image": image, "text_input": text} for image, text in zip(pixels, spec["captions"])]
if stage == "stage1":
    # As `mixkit train` collates in one process (LAVIS pads to 32; the losses are the same).
    batch = to_batch(Stage1Batch, Stage1Collator(bert, max_text_length=32, pad_to_longest=True)(samples))
    task = Stage1Task(bos_token_id=bert.bos_token_id, pad_token_id=bert.pad_token_id)
else:
    opt_tokenizer = AutoTokenizer.from_pretrained(spec["opt"])
    collator = Stage2Collator(opt_tokenizer, encoder_decoder=False, prompt=spec["prompt"], max_text_length=32)
    batch, task = to_batch(Stage2Batch, collator(samples)), Stage2Task()
model.eval()
with torch.no_grad():
    torch.manual_seed(1)
    eval_loss = task.compute(model, batch).loss.item()
model.train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05,
                              fused=spec["fused"])
times = []
for step in range(spec["steps"]):
    start = time.perf_counter()
    loss = task.compute(model, batch).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"eval_loss": eval_loss, "step_s": statistics.median(times[2:]),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def lavis_source(repo: Path, relative: str) -> str:
    """A file of the LAVIS checkout (a work tree, or a bare/mirror git directory read at HEAD)."""
    if (repo / relative).is_file():
        return (repo / relative).read_text()
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:{relative}"], check=True,
                          capture_output=True, text=True).stdout


def build_scratch(repo: Path, target: Path) -> Path:
    for relative, text in STUBS.items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_text(text)
    for relative in LAVIS_FILES:
        (target / relative).write_text(lavis_source(repo, relative))
    return target


def write_inputs(work: Path, batch_size: int) -> dict[str, str]:
    """A word-level BERT vocabulary of BERT's size (real words of the captions, then fillers) and one batch."""
    import torch
    from safetensors.torch import save_file

    tokenizer_dir = work / "bert-tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    words = sorted({word for caption in CAPTIONS for word in caption.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"[unused{i}]" for i in range(BERT_VOCAB_SIZE - len(vocab))]
    (tokenizer_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}))
    pixels = torch.randn(batch_size, 3, VISION["image_size"], VISION["image_size"],
                         generator=torch.Generator().manual_seed(0))
    save_file({"pixel_values": pixels}, str(work / "batch.safetensors"))
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch_size)]
    return {"tokenizer": str(tokenizer_dir), "batch": str(work / "batch.safetensors"), "captions": captions}


def run_side(python: str, script: str, spec: dict, pythonpath: str) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([python, "-c", script, json.dumps(spec)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_opt(work: Path) -> str:
    """A random OPT folder (safetensors) with a byte-level BPE tokenizer that both `transformers` 4.33 (slow
    `GPT2Tokenizer`: vocab.json + merges.txt, as LAVIS loads it) and 5.x (tokenizer.json) read alike."""
    from transformers import OPTConfig, OPTForCausalLM

    from mixkit.data.tokenizers import train_opt_tokenizer

    folder = work / "opt"
    if (folder / "model.safetensors").is_file():
        return str(folder)
    import torch

    torch.manual_seed(0)
    OPTForCausalLM(OPTConfig(**OPT)).save_pretrained(folder)
    train_opt_tokenizer([caption for caption in CAPTIONS for _ in range(20)], folder, vocab_size=400)
    model = json.loads((folder / "tokenizer.json").read_text())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["add_bos_token"] = True  # OPT's tokenizer starts every text with </s>
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return str(folder)


def run_stage(stage: str, spec: dict, args: argparse.Namespace, scratch: Path) -> None:
    spec = dict(spec, stage=stage, weights=str(WORK / f"lavis-{stage}.safetensors"),
                prompt=CAPTION_PROMPT if stage == "caption" else "")
    repo_root = str(Path(__file__).resolve().parents[1])
    variants = {"LAVIS": None, "mixkit fp32": ("fp32", False), "mixkit frozen bf16 + fused AdamW": ("bf16", True)}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for run in range(args.runs):
        for name, variant in variants.items():
            if variant is None:
                side = dict(spec, save_weights=run == 0)
                results[name].append(run_side(args.lavis_python, LAVIS_SCRIPT, side, str(scratch)))
            else:
                side = dict(spec, frozen_dtype=variant[0], fused=variant[1])
                results[name].append(run_side(sys.executable, MIXKIT_SCRIPT, side, repo_root))
            print(f"{stage} run {run + 1} {name}: {results[name][-1]}", file=sys.stderr)
    lavis_step = statistics.median(r["step_s"] for r in results["LAVIS"])
    print(f"\n{stage}, batch {args.batch}, {platform.processor() or platform.machine()}, 2 threads")
    print("| side | eval loss | s/step | samples/s | vs LAVIS | peak MiB |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        step = statistics.median(r["step_s"] for r in rows)
        peak = statistics.median(r["peak_mib"] for r in rows)
        print(f"| {name} | {rows[0]['eval_loss']:.6f} | {step:.3f} | {args.batch / step:.2f} | "
              f"{lavis_step / step:.2f}x | {peak:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lavis-repo", type=Path, required=True, help="a LAVIS checkout (or git dir) at 506965b")
    parser.add_argument("--lavis-python", required=True, help="Python of a venv with transformers==4.33.2")
    parser.add_argument("--stages", nargs="+", choices=["stage1", "stage2", "caption"],
                        default=["stage1", "stage2", "caption"], help="which trainings to time (default all)")
    parser.add_argument("--batch", type=int, default=8, help="samples per step (default 8)")
    parser.add_argument("--steps", type=int, default=8, help="steps per run; the first 2 are warm-up (default 8)")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs per side; medians reported")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    scratch = build_scratch(args.lavis_repo, WORK / "lavis-scratch")
    spec = {"vision": VISION, "qformer": QFORMER, "bert_vocab_size": BERT_VOCAB_SIZE, "steps": args.steps,
            "rendezvous": str(WORK / "rendezvous-"), **write_inputs(WORK, args.batch)}
    if set(args.stages) - {"stage1"}:
        spec["opt"] = write_opt(WORK)
    for stage in args.stages:
        run_stage(stage, spec, args, scratch)


if __name__ == "__main__":
    main()
