"""Turn a checkpoint name or folder into a validated checkpoint folder.

A mixkit checkpoint is a folder in the Hugging Face layout: ``config.json``,
``model.safetensors`` (or a sharded index and its shards), tokenizer files and a
``preprocessor_config.json``. ``resolve_checkpoint`` accepts such a folder or a
catalogue name and looks, in order, in ``$MIXKIT_HOME/checkpoints/<name>`` and in
the Hugging Face cache. It downloads only when allowed (see ``downloads_allowed``);
otherwise a missing checkpoint fails at once with the exact command that fetches it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from mixkit.models.catalogue import UnknownCheckpointError, entries_for_hub_repo, get_checkpoint, list_checkpoints
from mixkit.models.entry import CheckpointEntry
from mixkit.models.layout import CONFIG_NAME, PICKLE_WEIGHTS, PROCESSOR_FILES, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from mixkit.utils.environment import downloads_allowed, mixkit_home, offline_env

TOKENIZER_EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
# One of these vocabularies must sit beside a tokenizer_config.json that has no
# tokenizer.json: BPE (OPT), SentencePiece (T5), WordPiece (the Q-Former's BERT).
VOCAB_FILE_SETS = (("vocab.json", "merges.txt"), ("spiece.model",), ("vocab.txt",))

# What a download fetches: config, safetensors weights, tokenizer and processor
# files. Never the *.bin pickles (mixkit does not unpickle) nor TF/Flax weights.
HUB_ALLOW_PATTERNS = (
    CONFIG_NAME,
    "generation_config.json",
    WEIGHTS_NAME,
    "model-*.safetensors",
    WEIGHTS_INDEX_NAME,
    "tokenizer.json",
    *TOKENIZER_EXTRA_FILES,
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    *PROCESSOR_FILES,
)

class CheckpointNotFoundError(FileNotFoundError):
    """No local copy of a checkpoint, and downloading it was not allowed."""


class IncompleteCheckpointError(FileNotFoundError):
    """A checkpoint folder that lacks a required file (or holds unusable ones)."""


@dataclass(frozen=True)
class CheckpointFiles:
    """The files of a validated checkpoint folder."""

    directory: Path
    config: Path
    weights: tuple[Path, ...]  # model.safetensors, or every shard of the index
    weights_index: Path | None
    tokenizer: tuple[Path, ...]  # empty when the folder carries no tokenizer
    processor: Path | None


def checkpoint_cache_dir(name: str) -> Path:
    """Where the named checkpoint's folder is expected: ``$MIXKIT_HOME/checkpoints/<name>``."""
    return mixkit_home() / "checkpoints" / name


def _hub_download_command(repo: str, target: Path) -> str:
    return f'hf download {repo} --exclude "*.bin" --local-dir {target}'


def lavis_convert_command(entry: CheckpointEntry, target: Path) -> str:
    """The ``mixkit convert lavis`` call that builds ``entry`` from its LAVIS files."""
    assert entry.lavis_url is not None, entry.name
    command = f"mixkit convert lavis --lavis {entry.lavis_url.rsplit('/', 1)[1]} --kind {entry.kind}"
    if entry.lavis_vit_url is not None:
        command += f" --vit {entry.lavis_vit_url.rsplit('/', 1)[1]}"
    return command + f" --output {target}"


def fetch_instructions(entry: CheckpointEntry, target: Path) -> str:
    """How to put ``entry`` into ``target`` by hand: the Hub command, then LAVIS's files."""
    lines: list[str] = []
    if entry.hf_repo is not None:
        lines += ["Fetch it with:", f"  {_hub_download_command(entry.hf_repo, target)}"]
    if entry.lavis_url is not None:
        lines.append(("Or build" if lines else "Build") + " it from the LAVIS originals:")
        lines += [f"  download {url}" for url in (entry.lavis_url, entry.lavis_vit_url) if url]
        lines.append(f"  {lavis_convert_command(entry, target)}")
        if entry.language_model is not None:
            # LAVIS's .pth files hold only what was trained; the frozen LM is separate.
            lines.append(f"  (the language model weights come from {entry.language_model})")
    if entry.convert is not None:
        lines.append(("Or build" if lines else "Build") + f" it from the {entry.convert.origin} file:")
        lines += entry.convert.instructions(target)
    return "\n".join(lines)


def _generic_fetch_hint(directory: Path) -> str:
    return (
        "A mixkit checkpoint folder is written by `mixkit convert` or downloaded with "
        f'`hf download <repo> --exclude "*.bin" --local-dir {directory}`.'
    )


def _check_weights(directory: Path) -> tuple[tuple[Path, ...], Path | None, list[str]]:
    """(weight files, index or None, problems) for a folder."""
    single, index = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        return (single,), None, []
    if index.is_file():
        return _check_shards(index)
    pickles = [directory / name for name in PICKLE_WEIGHTS if (directory / name).is_file()]
    if pickles:
        return (), None, [
            f"{single}: missing; found {pickles[0]}, which mixkit never loads (a pickle can run "
            "code when unpickled). Download the .safetensors files instead "
            '(hf download <repo> --include "*.safetensors"), or convert it once in a trusted '
            "environment with transformers' from_pretrained(...).save_pretrained(...)"
        ]
    return (), None, [f"{single}: missing (the weights; or {index} with its shards)"]


def _check_shards(index: Path) -> tuple[tuple[Path, ...], Path | None, list[str]]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return (), index, [f"{index}: not a safetensors index with a 'weight_map' ({err!r})"]
    shards = sorted(set(weight_map.values()))
    # A shard name with a directory part could point outside the checkpoint.
    problems = [f"{index}: shard name {s!r} is not a plain file name" for s in shards if Path(s).name != s]
    problems += [
        f"{index.parent / s}: missing (a shard listed in {index.name})"
        for s in shards
        if Path(s).name == s and not (index.parent / s).is_file()
    ]
    return tuple(index.parent / s for s in shards), index, problems


def _check_tokenizer(directory: Path) -> tuple[tuple[Path, ...], list[str]]:
    """Tokenizer files, if the folder has a tokenizer; an incomplete one is a problem."""
    extras = tuple(directory / n for n in TOKENIZER_EXTRA_FILES if (directory / n).is_file())
    if (directory / "tokenizer.json").is_file():
        return (directory / "tokenizer.json",) + extras, []
    if not (directory / "tokenizer_config.json").is_file():
        return (), []  # no tokenizer shipped (e.g. a bare stage-1 Q-Former folder)
    for names in VOCAB_FILE_SETS:
        if all((directory / n).is_file() for n in names):
            return tuple(directory / n for n in names) + extras, []
    partial = [n for names in VOCAB_FILE_SETS for n in names if (directory / n).is_file()]
    expected = " or ".join("+".join(names) for names in VOCAB_FILE_SETS)
    found = f" (found only {', '.join(partial)})" if partial else ""
    return (), [f"{directory / 'tokenizer.json'}: missing, and no vocabulary beside tokenizer_config.json: "
                f"expected {expected}{found}"]


def check_checkpoint_dir(path: str | Path, entry: CheckpointEntry | None = None) -> CheckpointFiles:
    """Validate a checkpoint folder; every missing or unusable file is named in the error.

    ``entry`` (when the folder belongs to a catalogue name) makes the error say what
    to download; otherwise it gives the generic recipe.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {directory} does not exist")
    config = directory / CONFIG_NAME
    problems = [] if config.is_file() else [f"{config}: missing (the model config)"]
    weights, index, weight_problems = _check_weights(directory)
    tokenizer, tokenizer_problems = _check_tokenizer(directory)
    problems += weight_problems + tokenizer_problems
    if problems:
        hint = fetch_instructions(entry, directory) if entry is not None else _generic_fetch_hint(directory)
        listing = "\n".join(f"  - {p}" for p in problems)
        raise IncompleteCheckpointError(f"checkpoint folder {directory} is incomplete:\n{listing}\n{hint}")
    processor = next((directory / n for n in PROCESSOR_FILES if (directory / n).is_file()), None)
    return CheckpointFiles(directory, config, weights, index, tokenizer, processor)


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith(("~", "."))


def _hf_cached_snapshot(repo: str) -> Path | None:
    """The repo's folder in the Hugging Face cache, without touching the network."""
    try:
        found = snapshot_download(repo, local_files_only=True, allow_patterns=list(HUB_ALLOW_PATTERNS))
        return Path(str(found))
    except (LocalEntryNotFoundError, FileNotFoundError):
        return None


def _not_found_message(entry: CheckpointEntry, target: Path, offline: bool | None) -> str:
    looked = [f"  {target} (missing)"]
    if entry.hf_repo is not None:
        looked.append(f"  the Hugging Face cache for {entry.hf_repo} (missing)")
    forced = offline_env()
    if forced is not None:
        why = f"Downloads are off: {forced} is set."
    elif offline:
        why = "Downloads are off (offline=True)."
    else:
        why = "Downloads are off by default; set MIXKIT_ALLOW_DOWNLOAD=1 (or pass offline=False) to allow them."
    return "\n".join(
        [f"checkpoint {entry.name!r} is not available locally. Looked in:", *looked, why,
         fetch_instructions(entry, target)]
    )


def _resolve_entry(entry: CheckpointEntry, offline: bool | None) -> Path:
    target = checkpoint_cache_dir(entry.name)
    if target.is_dir():
        check_checkpoint_dir(target, entry)  # the user put it there: say what is missing
        return target
    allowed = downloads_allowed(offline)
    cached = _hf_cached_snapshot(entry.hf_repo) if entry.hf_repo is not None else None
    if cached is not None:
        try:
            check_checkpoint_dir(cached, entry)
            return cached
        except IncompleteCheckpointError:
            if not allowed:
                raise  # a partial cache: naming its missing files beats "not found"
    if not allowed or entry.hf_repo is None:
        # LAVIS-only entries need `mixkit convert`, which resolution does not run.
        raise CheckpointNotFoundError(_not_found_message(entry, target, offline))
    # Into the shared Hugging Face cache, so transformers and mixkit reuse one copy.
    downloaded = Path(str(snapshot_download(entry.hf_repo, allow_patterns=list(HUB_ALLOW_PATTERNS))))
    check_checkpoint_dir(downloaded, entry)
    return downloaded


def resolve_checkpoint(name_or_dir: str, *, offline: bool | None = None) -> Path:
    """A validated checkpoint folder for a folder path or a catalogue name.

    ``offline=None`` follows the environment (see ``downloads_allowed``); a string
    that is neither an existing folder nor a known name gets "did you mean".
    """
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        check_checkpoint_dir(path)
        return path
    try:
        entry = get_checkpoint(name_or_dir)
    except UnknownCheckpointError:
        if path.exists():
            raise CheckpointNotFoundError(f"{path} is a file, not a checkpoint folder") from None
        if _looks_like_path(name_or_dir):
            raise CheckpointNotFoundError(
                f"checkpoint folder {path} does not exist, and {name_or_dir!r} is not a catalogue name "
                "either. Run `mixkit models` to list the named checkpoints."
            ) from None
        raise
    return _resolve_entry(entry, offline)


def _hub_repo_of_cache_path(directory: Path) -> str | None:
    """`org/name` for a folder inside the Hugging Face cache (`.../models--org--name/snapshots/<rev>`)."""
    for part in directory.parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/", 1)
    return None


def identify_checkpoint(directory: str | Path) -> CheckpointEntry | None:
    """The catalogue entry a checkpoint folder holds, when its location says so: the folder a name resolves
    to (`$MIXKIT_HOME/checkpoints/<name>`, where `hf download --local-dir` puts it) or the Hugging Face cache
    snapshot of an entry's Hub repository. None for any other folder (its own files then decide)."""
    directory = Path(directory).expanduser().resolve()
    for entry in list_checkpoints():
        if checkpoint_cache_dir(entry.name).expanduser().resolve() == directory:
            return entry
    repo = _hub_repo_of_cache_path(directory)
    matches = entries_for_hub_repo(repo) if repo is not None else []
    return matches[0] if matches else None  # names sharing a repo share its weights and settings
