"""The `mixkit` command. Each subcommand's module is imported only when it runs, so `--help` stays fast.

Building the parser imports only light modules (typed configs and `add_arguments` functions that need no torch,
`transformers`, PIL or numpy); `tests/test_startup.py` checks it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from mixkit.utils.typed_args import add_dataclass_arguments


def _lazy(module: str, function: str, *args: object) -> Callable[[argparse.Namespace], int]:
    def run(namespace: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(namespace, *args)

    return run


def _models(_: argparse.Namespace) -> int:
    from mixkit.models.catalogue import format_catalogue_table

    print(format_catalogue_table())
    return 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    from mixkit.apps.predict_config import PREDICT_CONFIGS

    predict = subparsers.add_parser("predict", help="caption images, answer questions about them, classify them")
    tasks = predict.add_subparsers(dest="task", required=True, metavar="TASK")
    descriptions = {
        "caption": ("describe each image", "Caption images with a BLIP-2 or BLIP checkpoint (its reference "
                                           "settings; --prompt '' for no prompt)."),
        "vqa": ("answer a question about each image",
                "Visual question answering with a BLIP-2 (zero-shot) or BLIP checkpoint; BLIP generates, or ranks "
                "an answer list given with --answers."),
        "classify": ("zero-shot classify each image among given labels",
                     "Zero-shot classification with a CLIP checkpoint or a BLIP-2 stage-1 checkpoint (ITC): "
                     "each label fills the template, and the probabilities are the softmax of the model's scaled "
                     "image-text similarities."),
        "match": ("score how well each text matches its image",
                  "Image-text matching: the ITM match probability and the ITC cosine where the model has them "
                  "(BLIP, BLIP-2 stage 1: both; CLIP: the cosine)."),
        "chat": ("answer a free-form instruction about each image",
                 "One instruction about each image with a chat model (InstructBLIP, MiniGPT-4, MiniGPT-v2); the "
                 "response is the continuation only. Settings not given come from the checkpoint: the official "
                 "code's defaults for a catalogue name, generation_config.json for a transformers-saved folder."),
    }
    for task, config_type in PREDICT_CONFIGS.items():
        help_text, description = descriptions[task]
        parser = tasks.add_parser(task, help=help_text, description=description)
        add_dataclass_arguments(parser, config_type)
        parser.set_defaults(handler=_lazy("mixkit.apps.predict", "run", task))


def _add_chat(subparsers: argparse._SubParsersAction) -> None:
    from mixkit.apps.predict_config import ChatConfig

    chat = subparsers.add_parser(
        "chat", help="talk about an image with a chat model, interactively (history kept, tokens streamed)",
        description="An interactive conversation about one image with a chat model (InstructBLIP, MiniGPT-4, "
                    "MiniGPT-v2): each line on stdin is a message; responses stream to stdout. /reset forgets the "
                    "history, /quit ends.")
    add_dataclass_arguments(chat, ChatConfig)
    chat.set_defaults(handler=_lazy("mixkit.apps.chat", "run_chat"))


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    from mixkit.models.blip2.lavis_options import add_convert_arguments

    convert = subparsers.add_parser("convert", help="convert checkpoints from other toolkits")
    sources = convert.add_subparsers(dest="source", required=True, metavar="SOURCE")
    lavis = sources.add_parser("lavis", help="a LAVIS BLIP-2 .pth -> model.safetensors in mixkit's layout",
                               description="Convert a LAVIS BLIP-2 checkpoint with a strict key check.")
    add_convert_arguments(lavis)
    lavis.set_defaults(handler=_lazy("mixkit.models.blip2.lavis_files", "run_convert"))
    minigpt4 = sources.add_parser(
        "minigpt4", help="official MiniGPT-4 / MiniGPT-v2 .pth + BLIP-2 and Llama folders -> a mixkit folder",
        description="Build a MiniGPT-4 or MiniGPT-v2 checkpoint folder from the official projection (and LoRA) "
                    ".pth, a BLIP-2 folder (EVA ViT, Q-Former) and the Llama folder, with a strict key check.")
    importlib.import_module("mixkit.models.minigpt4.convert_options").add_arguments(minigpt4)
    minigpt4.set_defaults(handler=_lazy("mixkit.models.minigpt4.convert", "run"))
    clip_options = importlib.import_module("mixkit.models.clip.convert_options")
    for source, origin in (("open-clip", "open_clip ViT"), ("eva-clip", "EVA-CLIP (EVA-02)")):
        text = f"an {origin} weights file + CLIP tokenizer -> a complete mixkit folder, with a strict key check"
        parser = sources.add_parser(source, help=text, description=text)
        getattr(clip_options, f"add_{source.replace('-', '_')}_arguments")(parser)
        parser.set_defaults(handler=_lazy("mixkit.models.clip.convert_command", f"run_{source.replace('-', '_')}"))


def _add_module_group(subparsers: argparse._SubParsersAction, name: str, help_text: str,
                      entries: tuple[tuple[str, str, str], ...]) -> None:
    """`mixkit NAME ENTRY`: each entry's module provides `add_arguments(parser)` and `run(args)`."""
    group = subparsers.add_parser(name, help=help_text)
    choices = group.add_subparsers(dest=f"{name}_choice", required=True, metavar="KIND")
    for entry, module, text in entries:
        parser = choices.add_parser(entry, help=text, description=text)
        importlib.import_module(module).add_arguments(parser)
        parser.set_defaults(handler=_lazy(module, "run"))


SCORERS = (
    ("vqa", "mixkit.eval.vqa_score", "VQAv2 accuracy, as the official GT-Vision-Lab/VQA evaluator computes it"),
    ("caption", "mixkit.eval.caption_score", "COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr, SPICE)"),
)
EVALUATIONS = (
    ("vqa", "VqaEvalConfig", "mixkit.eval.vqa_eval",
     "zero-shot VQAv2: answers in the official result format, scored"),
    ("caption", "CaptionEvalConfig", "mixkit.eval.caption_eval",
     "COCO Karpathy captioning: result file and COCO caption metrics"),
    ("grounding", "GroundingEvalConfig", "mixkit.eval.grounding_eval",
     "MiniGPT-v2 referring-expression grounding (RefCOCO format): accuracy at IoU > 0.5"),
    ("retrieval", "RetrievalEvalConfig", "mixkit.eval.retrieval_eval",
     "COCO / Flickr30k image-text retrieval: ITC top-k, ITM re-rank, R@1/5/10"),
    ("zeroshot", "ZeroShotEvalConfig", "mixkit.eval.zeroshot_eval",
     "zero-shot classification (CLIP, EVA-CLIP): prompt-ensemble classifier, top-1 / top-5 / per-class accuracy"),
)


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    """`mixkit eval TASK`: options from the task's typed config; the run module loads only when it runs."""
    from mixkit.eval import config as eval_config

    group = subparsers.add_parser("eval", help="evaluate a model end to end (sharded under torchrun)")
    choices = group.add_subparsers(dest="eval_choice", required=True, metavar="KIND")
    for entry, config_name, module, text in EVALUATIONS:
        parser = choices.add_parser(entry, help=text, description=text)
        add_dataclass_arguments(parser, getattr(eval_config, config_name))
        parser.set_defaults(handler=_lazy(module, "run"))


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    from mixkit.data.validation import add_arguments

    data = subparsers.add_parser("data", help="check datasets before training")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate an annotation file and its images",
                               description="Validate an annotation file (fields, types, image files) and "
                                           "list the first problems with their record numbers.")
    add_arguments(check)
    check.set_defaults(handler=_lazy("mixkit.data.validation", "run"))
    shards = actions.add_parser("shards", help="write WebDataset tar shards from an annotation file",
                                description="Write WebDataset tar shards (one sample per image, original bytes) "
                                            "and a shards.json index, for data that does not fit one disk.")
    importlib.import_module("mixkit.data.shards.options").add_arguments(shards)
    shards.set_defaults(handler=_lazy("mixkit.data.shards.writer", "run"))


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from mixkit.train.train_options import add_arguments

    # No argparse help here: `mixkit train STAGE --help` prints every Trainer option (HfArgumentParser).
    train = subparsers.add_parser("train", help="train a BLIP-2 stage (stage 1, stage 2, caption fine-tuning)",
                                  add_help=False)
    add_arguments(train)
    train.set_defaults(handler=_lazy("mixkit.train.train_cli", "run"))


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="the whole BLIP-2 workflow on synthetic data, on a laptop CPU in about 4 minutes",
        description="Train BLIP-2 in its two stages on the synthetic shapes data, evaluate captioning and VQA "
                    "against baselines with the real scorers, predict, and write metrics.json + report.html.")
    importlib.import_module("mixkit.apps.demo").add_arguments(demo)
    demo.set_defaults(handler=_lazy("mixkit.apps.demo", "run"))


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    from mixkit.serve.config import ServeConfig

    serve = subparsers.add_parser(
        "serve", help="serve a model over HTTP: caption, VQA, classify, chat (batched), a web page, metrics",
        description="An HTTP server for a checkpoint (FastAPI + uvicorn, `pip install 'mixkit[serve]'`): "
                    "/v1/caption, /v1/vqa, /v1/classify, /v1/chat/completions (OpenAI format), /health, /metrics "
                    "and a web page at /; AppFlow apps named with --app at /v1/apps/APP. Requests arriving "
                    "together are answered by one batched model call.")
    add_dataclass_arguments(serve, ServeConfig)
    serve.set_defaults(handler=_lazy("mixkit.serve.server", "run"))


def _add_app(subparsers: argparse._SubParsersAction) -> None:
    from mixkit.apps.appflow.options import add_list_arguments, add_run_arguments

    app = subparsers.add_parser("app", help="one-call applications (AppFlow): captioning, detection + "
                                            "segmentation, labelling, image / video / audio generation")
    actions = app.add_subparsers(dest="app_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every app, its models (default marked), inputs and outputs",
                                 description="List the AppFlow apps.")
    add_list_arguments(listing)
    listing.set_defaults(handler=_lazy("mixkit.apps.appflow.command", "run_list"))
    run = actions.add_parser("run", help="run an app on an image / prompt and write its results",
                             description="Run an AppFlow app; media are written under --output.")
    add_run_arguments(run)
    run.set_defaults(handler=_lazy("mixkit.apps.appflow.command", "run"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixkit", description="mixkit: BLIP-2 and the BLIP family for PyTorch and Hugging Face.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models = subparsers.add_parser("models", help="list the named checkpoints", description="List named checkpoints.")
    models.set_defaults(handler=_models)
    _add_predict(subparsers)
    _add_chat(subparsers)
    _add_convert(subparsers)
    _add_module_group(subparsers, "score", "score result files with the official metrics", SCORERS)
    _add_eval(subparsers)
    _add_data(subparsers)
    _add_train(subparsers)
    _add_demo(subparsers)
    _add_serve(subparsers)
    _add_app(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":  # the Trainer's options are parsed by the train command itself
        return importlib.import_module("mixkit.train.train_cli").run(args, rest)
    if args.command == "app" and args.app_action == "run":  # the app's own --KEY VALUE parameters
        return importlib.import_module("mixkit.apps.appflow.command").run(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
