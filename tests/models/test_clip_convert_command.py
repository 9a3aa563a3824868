"""`mixkit convert open-clip` / `mixkit convert eva-clip` on files in the published layouts (built by the builders of
test_clip_open_clip.py and test_eva_clip.py): a complete folder on which `mixkit predict classify` gives the
probabilities of the independent reference forwards; strict key checks, bad input, and the catalogue entries'
fetch instructions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mixkit.cli import main
from mixkit.data.tokenizers import train_clip_tokenizer
from mixkit.models.catalogue import get_checkpoint
from mixkit.models.hub import fetch_instructions
from tests.models import test_clip_open_clip as open_clip_layout
from tests.models import test_eva_clip as eva_layout

LABELS = ["circle", "square", "triangle"]
PROMPTS = [f"a photo of a {label}." for label in LABELS]  # predict classify's default template
HEAD_WIDTH = str(open_clip_layout.WIDTH // open_clip_layout.HEADS)
FOLDER_FILES = ["config.json", "conversion_report.json", "model.safetensors", "preprocessor_config.json",
                "tokenizer_config.json"]


def _tokenizer(folder: Path) -> int:
    return len(train_clip_tokenizer(PROMPTS, folder, merges=40))


def _published(source: str, folder: Path, vocab: int) -> tuple[dict, Path, str]:
    """(state dict, its file in the published layout, text prefix): open_clip's safetensors, EVA-CLIP's .pt."""
    if source == "open-clip":
        sd, prefix = open_clip_layout.open_clip_state_dict(), ""
    else:
        sd, prefix = eva_layout.eva_state_dict(), "text."
    generator = torch.Generator().manual_seed(5)
    sd[prefix + "token_embedding.weight"] = torch.randn(vocab, open_clip_layout.WIDTH, generator=generator) * 0.5
    if source == "open-clip":
        from safetensors.torch import save_file

        path = folder / "open_clip_model.safetensors"
        save_file(sd, str(path))
    else:
        path = folder / "EVA02_CLIP_tiny.pt"
        torch.save(sd, path)
    return sd, path, prefix


def _reference_probs(source: str, sd: dict, prefix: str, output: Path, image: Image.Image) -> torch.Tensor:
    """softmax(exp(logit_scale) * cosine) from the reference forwards, on the folder's own preprocessing."""
    from transformers import CLIPImageProcessor, CLIPTokenizer

    pixels = CLIPImageProcessor.from_pretrained(output)(images=[image], return_tensors="pt")["pixel_values"]
    tokens = CLIPTokenizer.from_pretrained(output)(PROMPTS, padding=True, return_tensors="pt")["input_ids"]
    if source == "open-clip":
        image_feats = open_clip_layout.reference_image(sd, pixels, F.gelu)
    else:
        image_feats = eva_layout.reference_image(sd, pixels)
    text_feats = open_clip_layout.reference_text(sd, tokens, F.gelu, prefix)
    cosine = F.normalize(image_feats, dim=-1) @ F.normalize(text_feats, dim=-1).T
    return (sd["logit_scale"].exp() * cosine).softmax(-1)[0]


@pytest.mark.parametrize("source", ["open-clip", "eva-clip"])
def test_convert_writes_a_folder_that_predict_classify_runs(source: str, tmp_path: Path, capsys) -> None:
    vocab = _tokenizer(tmp_path / "tokenizer")
    sd, weights, prefix = _published(source, tmp_path, vocab)
    output = tmp_path / "converted"
    stats = ["--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5"] if source == "open-clip" else []
    code = main(["convert", source, "--weights", str(weights), "--tokenizer", str(tmp_path / "tokenizer"),
                 "--output", str(output), "--head-width", HEAD_WIDTH, *stats])
    assert code == 0 and capsys.readouterr().out.strip().splitlines()[-1] == str(output)  # (deepspeed may log above)
    assert set(FOLDER_FILES) <= {p.name for p in output.iterdir()}
    processor = json.loads((output / "preprocessor_config.json").read_text())
    size = open_clip_layout.PATCH * open_clip_layout.GRID
    assert processor["crop_size"] == {"height": size, "width": size}
    assert processor["image_mean"] == ([0.5] * 3 if stats else pytest.approx([0.48145466, 0.4578275, 0.40821073]))
    report = json.loads((output / "conversion_report.json").read_text())
    assert report["unmapped"] == [] and report["weights"] == str(weights)

    image = Image.new("RGB", (40, 32), "white")
    image.paste((200, 30, 30), (8, 6, 30, 28))
    image.save(tmp_path / "red.png")
    assert main(["predict", "classify", "--model", str(output), "--image", str(tmp_path / "red.png"),
                 "--labels", ",".join(LABELS), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["labels"] == LABELS
    expected = _reference_probs(source, sd, prefix, output, image)
    torch.testing.assert_close(torch.tensor(result["probs"]), expected.float(), atol=1e-5, rtol=0)


def test_leftover_key_fails_listing_it_and_writes_nothing(tmp_path: Path, capsys) -> None:
    vocab = _tokenizer(tmp_path / "tokenizer")
    sd, weights, _ = _published("eva-clip", tmp_path, vocab)
    torch.save({**sd, "visual.extra.weight": torch.zeros(2)}, weights)
    code = main(["convert", "eva-clip", "--weights", str(weights), "--tokenizer", str(tmp_path / "tokenizer"),
                 "--output", str(tmp_path / "out"), "--head-width", HEAD_WIDTH])
    assert code == 1 and "visual.extra.weight" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("problem, message", [
    ("tokenizer", "--tokenizer"),  # a vocabulary that is not the weights' one
    ("weights", "no such weights file"),
    ("mean", "--mean and --std take three numbers"),
])
def test_bad_input_exits_2_with_one_message(problem: str, message: str, tmp_path: Path, capsys) -> None:
    vocab = _tokenizer(tmp_path / "tokenizer")
    _, weights, _ = _published("open-clip", tmp_path, vocab + (1 if problem == "tokenizer" else 0))
    args = ["convert", "open-clip", "--weights", str(weights), "--tokenizer", str(tmp_path / "tokenizer"),
            "--output", str(tmp_path / "out"), "--head-width", HEAD_WIDTH]
    if problem == "weights":
        args[args.index("--weights") + 1] = str(tmp_path / "missing.safetensors")
    if problem == "mean":
        args += ["--mean", "0.5", "0.5"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, file_name, command", [
    ("open-clip-vit-b-32-laion2b", "open_clip_model.safetensors", "mixkit convert open-clip"),
    ("open-clip-vit-l-14-laion2b", "open_clip_model.safetensors", "mixkit convert open-clip"),
    ("eva02-clip-b-16", "EVA02_CLIP_B_psz16_s8B.pt", "mixkit convert eva-clip"),
    ("eva02-clip-l-14", "EVA02_CLIP_L_psz14_s4B.pt", "mixkit convert eva-clip"),
])
def test_catalogue_entries_name_the_file_and_the_convert_command(name: str, file_name: str, command: str) -> None:
    entry = get_checkpoint(name)
    target = Path("/ckpt") / name
    lines = fetch_instructions(entry, target).splitlines()
    assert lines[0].startswith("Build it from the ")
    assert lines[1].startswith("  download https://huggingface.co/") and lines[1].endswith("/" + file_name)
    assert "hf download openai/clip-vit-base-patch32" in lines[2] and "--local-dir clip-tokenizer" in lines[2]
    assert lines[3] == (f"  {command} --weights {file_name} --tokenizer clip-tokenizer"
                        + (" --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5" if entry.mean == (0.5,) * 3 else "")
                        + f" --output {target}")
    assert entry.hf_repo is None and entry.tasks == ("classify", "match")
