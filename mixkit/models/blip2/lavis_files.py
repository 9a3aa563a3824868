"""Files around the LAVIS converter: reading LAVIS `.pth` files safely, merging the separate EVA ViT file,
completing a conversion from a base checkpoint, and the `mixkit convert lavis` command.

The key maps and the conversion itself are in `convert_lavis.py`; this module is its input/output side.
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mixkit.models.blip2.convert_lavis import (
    LANGUAGE_MODEL_PREFIXES,
    STAGE2,
    VISION_TOWER_PREFIXES,
    ConversionError,
    ConversionReport,
    Kind,
    KeyCheck,
    listing,
    convert_lavis_state_dict,
    target_keys,
)
from mixkit.models.blip2.lavis_options import add_convert_arguments  # main_convert's parser
from mixkit.models.layout import WEIGHTS_NAME


# --- files ----------------------------------------------------------------------------------------------------


def load_lavis_checkpoint(path: str | Path, prefix: str = "") -> dict[str, Tensor]:
    """Load a LAVIS ``.pth`` (bare state dict or the runner's ``{"model": sd, ...}``) without unsafe pickling.

    ``prefix`` is prepended to every key: ``eva_vit_g.pth`` holds the bare ViT (``blocks.0...``), which LAVIS
    mounts as ``visual_encoder``, so load it with ``prefix="visual_encoder."``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"{path}: refusing to load; it holds objects that need unsafe unpickling (weights_only=True failed). "
            f"Re-save only its state dict, e.g. torch.save(ckpt['model'], ...), from code you trust. ({error})"
        ) from error
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a state dict or {{'model': state_dict}}, got {type(obj).__name__}")
    not_tensors = sorted(str(key) for key, value in obj.items() if not isinstance(value, Tensor))
    if not_tensors:
        raise ConversionError(f"{path}: not a state dict; " + listing("non-tensor entries", not_tensors))
    return {prefix + key: value for key, value in obj.items()}


def merge_vit(lavis_sd: dict[str, Tensor], vit_sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Add the ViT weights under the checkpoint's; the checkpoint wins, as in LAVIS (ViT built, then overwritten).

    Returns the merged dict and the ViT keys the checkpoint overrode.
    """
    overridden = sorted(vit_sd.keys() & lavis_sd.keys())
    return {**vit_sd, **lavis_sd}, overridden


def untie_for_safetensors(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors that share storage (tied OPT/T5 embeddings): clone every later alias."""
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone().contiguous() if pointer in seen else tensor.contiguous()
        seen.add(pointer)
    return out


# --- command line (the options are in lavis_options.py, light for mixkit/cli.py) ------------------------------


BASE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
              "merges.txt", "vocab.txt", "spiece.model", "preprocessor_config.json", "processor_config.json",
              "mixkit_settings.json")


def attach_base(output: Path, base: str, kind: Kind) -> Path:
    """Make `output` a complete checkpoint: the base's config/tokenizer/preprocessing files and a
    `mixkit_base.json` naming it for every weight the conversion did not produce; then load it strictly."""
    import shutil

    from mixkit.models.blip2.modeling import Blip2Model, write_base_model_note
    from mixkit.models.blip2.stage1 import Blip2Stage1Model
    from mixkit.models.hub import resolve_checkpoint

    base_dir = resolve_checkpoint(base)
    for name in BASE_FILES:
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, output / name)
    write_base_model_note(output, base_dir)
    (Blip2Stage1Model if kind == "stage1" else Blip2Model).from_pretrained(output)  # proves it is complete
    return base_dir


def _load_blip2_config(path: Path) -> object:
    from transformers import Blip2Config

    return Blip2Config.from_json_file(str(path)) if path.is_file() else Blip2Config.from_pretrained(str(path))


def resolve_base_config(base: str) -> Path:
    from mixkit.models.hub import resolve_checkpoint

    return resolve_checkpoint(base) / "config.json"


def _provided_elsewhere(kind: Kind, has_vit: bool) -> tuple[str, ...]:
    # LAVIS never trains the language model, and trains the ViT only in caption fine-tuning.
    prefixes = LANGUAGE_MODEL_PREFIXES if kind in STAGE2 else ()
    return prefixes + (() if has_vit else VISION_TOWER_PREFIXES)


def _check(report: ConversionReport, args: argparse.Namespace, has_vit: bool) -> KeyCheck | None:
    """Key check against ``--config``; None without one (then only unmapped keys can be judged)."""
    source = args.config or (resolve_base_config(args.base) if args.base else None)
    if source is None:
        return None
    config = _load_blip2_config(source)
    provided = _provided_elsewhere(args.kind, has_vit)
    return report.check_against(target_keys(config, args.kind), provided, raise_on_error=False)


def run_convert(args: argparse.Namespace) -> int:
    """Convert, check (with ``--config``), write ``conversion_report.json`` and, if clean, ``model.safetensors``."""
    from safetensors.torch import save_file

    lavis_sd = load_lavis_checkpoint(args.lavis)
    overridden: list[str] = []
    if args.vit is not None:
        lavis_sd, overridden = merge_vit(lavis_sd, load_lavis_checkpoint(args.vit, prefix="visual_encoder."))
    report = convert_lavis_state_dict(lavis_sd, args.kind)
    has_vit = any(key.startswith("visual_encoder.blocks.") for key in lavis_sd)
    check = _check(report, args, has_vit) or KeyCheck([], [], list(report.unmapped), [])
    summary = report.summary() | {
        "source": str(args.lavis),
        "vit": str(args.vit) if args.vit else None,
        "vit_keys_overridden_by_checkpoint": overridden,
        "checked_against": str(args.config) if args.config else None,
        "missing": check.missing,
        "unexpected": check.unexpected,
        "missing_provided_elsewhere": check.provided_elsewhere,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    report_path = args.output / "conversion_report.json"
    report_path.write_text(json.dumps(summary, indent=2) + "\n")
    for key, reason in report.dropped.items():
        print(f"dropped {key}: {reason}")
    if check.missing or check.unexpected or (check.unmapped and not args.allow_unmapped):
        print(f"conversion failed, nothing written but {report_path}:\n{check.message()}")
        return 1
    for key in report.unmapped:
        print(f"unmapped (allowed by --allow-unmapped) {key}")
    if args.config is None and args.base is None:
        print("no --config or --base given: missing and unexpected keys were not checked")
    output = args.output / WEIGHTS_NAME
    save_file(untie_for_safetensors(report.state_dict), str(output), {"format": "pt"})
    print(f"wrote {len(report.state_dict)} tensors to {output}")
    if args.base is not None:
        base_dir = attach_base(args.output, args.base, args.kind)
        print(f"{args.output} is a complete checkpoint: the other weights come from {base_dir}")
    return 0


def main_convert(argv: Sequence[str] | None = None) -> int:
    parser = add_convert_arguments(argparse.ArgumentParser(description="Convert a LAVIS BLIP-2 checkpoint."))
    return run_convert(parser.parse_args(argv))
