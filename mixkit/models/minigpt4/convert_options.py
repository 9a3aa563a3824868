"""The options of `mixkit convert minigpt4`, apart from the converter so that building the parser imports no torch."""

from __future__ import annotations

import argparse

VARIANTS = ("vicuna0", "llama2", "minigptv2")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--variant", choices=VARIANTS, required=True,
                        help="vicuna0 (MiniGPT-4 with Q-Former), llama2 (MiniGPT-4 Llama-2) or minigptv2")
    parser.add_argument("--checkpoint", required=True,
                        help="the official .pth (pretrained_minigpt4*.pth, minigptv2_checkpoint.pth); read with "
                             "torch.load(weights_only=True)")
    parser.add_argument("--blip2", required=True,
                        help="BLIP-2 folder in the Hugging Face layout for the EVA ViT (and, for vicuna0, its "
                             "Q-Former), e.g. a download of Salesforce/blip2-flan-t5-xxl")
    parser.add_argument("--llama", required=True,
                        help="the language model folder (Vicuna v0 for vicuna0, Llama-2-7b-chat-hf otherwise)")
    parser.add_argument("--output", required=True, help="folder to write the mixkit checkpoint into")
    return parser
