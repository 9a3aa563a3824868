"""Checkpoint resolution and folder validation, all offline and on temporary folders."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from mixkit.models import hub
from mixkit.models.catalogue import UnknownCheckpointError
from mixkit.models.hub import (
    CheckpointNotFoundError,
    IncompleteCheckpointError,
    check_checkpoint_dir,
    checkpoint_cache_dir,
    downloads_allowed,
    resolve_checkpoint,
)


def make_checkpoint(directory: Path, *, sharded: bool = False) -> Path:
    """A folder with the files a checkpoint needs; the contents are placeholders."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    if sharded:
        shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        index = {"metadata": {}, "weight_map": {"a.weight": shards[0], "b.weight": shards[1]}}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))
        for shard in shards:
            (directory / shard).write_bytes(b"")
    else:
        (directory / "model.safetensors").write_bytes(b"")
    (directory / "tokenizer.json").write_text("{}")
    (directory / "tokenizer_config.json").write_text("{}")
    (directory / "preprocessor_config.json").write_text("{}")
    return directory


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh MIXKIT_HOME, no download/offline flags, and a Hub that must stay local."""
    home = tmp_path / "mixkit_home"
    monkeypatch.setenv("MIXKIT_HOME", str(home))
    for name in ("HF_HUB_OFFLINE", "MIXKIT_OFFLINE", "MIXKIT_ALLOW_DOWNLOAD"):
        monkeypatch.delenv(name, raising=False)

    def local_only(repo_id: str, **kwargs: Any) -> str:
        assert kwargs.get("local_files_only") is True, "resolution tried to download"
        raise LocalEntryNotFoundError(f"{repo_id} is not cached")

    monkeypatch.setattr(hub, "snapshot_download", local_only)
    return home


def test_cache_dir_follows_mixkit_home(isolated_env: Path) -> None:
    assert checkpoint_cache_dir("blip2-stage1") == isolated_env / "checkpoints" / "blip2-stage1"


def test_missing_named_checkpoint_fails_fast_offline(isolated_env: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("blip2-pretrained-opt2.7b")
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    target = isolated_env / "checkpoints" / "blip2-pretrained-opt2.7b"
    assert "hf download Salesforce/blip2-opt-2.7b" in message
    assert f"--local-dir {target}" in message
    assert "blip2_pretrained_opt2.7b.pth" in message and "eva_vit_g.pth" in message
    assert "mixkit convert lavis --lavis blip2_pretrained_opt2.7b.pth --kind opt --vit eva_vit_g.pth" in message
    assert "MIXKIT_ALLOW_DOWNLOAD" in message


def test_offline_env_beats_offline_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not downloads_allowed(offline=False)
    with pytest.raises(CheckpointNotFoundError, match="HF_HUB_OFFLINE is set"):
        resolve_checkpoint("blip2-caption-flant5xl", offline=False)


def test_download_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not downloads_allowed()
    assert downloads_allowed(offline=False)
    monkeypatch.setenv("MIXKIT_ALLOW_DOWNLOAD", "1")
    assert downloads_allowed() and not downloads_allowed(offline=True)


def test_download_when_allowed_fetches_safetensors_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    snapshot = make_checkpoint(tmp_path / "hf_snapshot")

    def fake_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        return str(snapshot)

    monkeypatch.setattr(hub, "snapshot_download", fake_download)
    assert resolve_checkpoint("blip2-stage1", offline=False) == snapshot
    assert [c.get("local_files_only", False) for c in calls] == [True, False]
    patterns = calls[-1]["allow_patterns"]
    assert calls[-1]["repo_id"] == "Salesforce/blip2-itm-vit-g"
    assert "config.json" in patterns and "model-*.safetensors" in patterns
    assert not any(p.endswith(".bin") for p in patterns)


def test_name_under_mixkit_home_resolves(isolated_env: Path) -> None:
    folder = make_checkpoint(isolated_env / "checkpoints" / "blip2-caption-opt2.7b")
    assert resolve_checkpoint("blip2-caption-opt2.7b") == folder


def test_name_in_hf_cache_resolves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    snapshot = make_checkpoint(tmp_path / "snapshots" / "abc123")

    def cached(repo_id: str, **kwargs: Any) -> str:
        assert kwargs.get("local_files_only") is True and repo_id == "Salesforce/blip2-flan-t5-xl"
        return str(snapshot)

    monkeypatch.setattr(hub, "snapshot_download", cached)
    assert resolve_checkpoint("blip2-pretrained-flant5xl") == snapshot


def test_incomplete_folder_under_mixkit_home_names_what_to_fetch(isolated_env: Path) -> None:
    folder = isolated_env / "checkpoints" / "blip2-caption-opt6.7b"
    folder.mkdir(parents=True)
    with pytest.raises(IncompleteCheckpointError) as info:
        resolve_checkpoint("blip2-caption-opt6.7b")
    message = str(info.value)
    assert str(folder / "config.json") in message
    assert "hf download Salesforce/blip2-opt-6.7b-coco" in message


def test_existing_directory_is_validated_and_returned(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "mine")
    assert resolve_checkpoint(str(folder)) == folder


def test_unknown_name_gets_did_you_mean() -> None:
    with pytest.raises(UnknownCheckpointError, match="did you mean 'blip2-pretrained-opt2.7b'"):
        resolve_checkpoint("blip2-pretrained-opt2_7b")


def test_missing_path_says_it_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ckpt"
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        resolve_checkpoint(str(missing))


def test_check_accepts_a_complete_folder(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ok")
    files = check_checkpoint_dir(folder)
    assert files.config == folder / "config.json"
    assert files.weights == (folder / "model.safetensors",) and files.weights_index is None
    assert folder / "tokenizer.json" in files.tokenizer
    assert files.processor == folder / "preprocessor_config.json"


def test_check_accepts_a_sharded_index(tmp_path: Path) -> None:
    files = check_checkpoint_dir(make_checkpoint(tmp_path / "sharded", sharded=True))
    assert files.weights_index is not None and len(files.weights) == 2


def test_check_names_a_missing_shard(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "sharded", sharded=True)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(IncompleteCheckpointError, match="model-00002-of-00002.safetensors: missing"):
        check_checkpoint_dir(folder)


def test_check_missing_config(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "noconfig")
    (folder / "config.json").unlink()
    with pytest.raises(IncompleteCheckpointError) as info:
        check_checkpoint_dir(folder)
    assert f"{folder / 'config.json'}: missing" in str(info.value)
    assert "hf download" in str(info.value)


def test_check_missing_weights(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(IncompleteCheckpointError, match="model.safetensors: missing"):
        check_checkpoint_dir(folder)


def test_check_refuses_a_pickle_only_folder(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "bin")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(IncompleteCheckpointError) as info:
        check_checkpoint_dir(folder)
    message = str(info.value)
    assert str(folder / "pytorch_model.bin") in message
    assert "never loads" in message and "safetensors" in message


def test_check_tokenizer_config_needs_a_vocabulary(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "tok")
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.json").write_text("{}")
    with pytest.raises(IncompleteCheckpointError, match="vocab.json\\+merges.txt"):
        check_checkpoint_dir(folder)
    (folder / "merges.txt").write_text("")
    assert folder / "merges.txt" in check_checkpoint_dir(folder).tokenizer


def test_check_allows_a_folder_without_tokenizer_or_processor(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (folder / name).unlink()
    files = check_checkpoint_dir(folder)
    assert files.tokenizer == () and files.processor is None
