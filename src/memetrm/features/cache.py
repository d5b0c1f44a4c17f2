"""Feature cache: one safetensors + JSON entry per (dataset split, encoder, field).

The key hashes the encoder's name and weights version and the content of every record the
field is computed from (text, or image bytes), so editing the data or swapping weights misses
the cache. Entries are written through a temp dir and renamed, so an interrupted extraction
leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from memetrm.data.records import MemeRecord
from memetrm.errors import ConfigError
from memetrm.utils import atomic_write_dir, default_cache_dir

FORMAT_VERSION = 1


def content_hash(records: Sequence[MemeRecord], field: str) -> str:
    """Hash ids and the exact input of ``field`` for every record, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(r.id.encode() + b"\0")
        if field == "image":
            h.update(r.image.read_bytes() if r.image and r.image.is_file() else b"<missing>")
        else:
            h.update(r.texts.get(field, "").encode())
        h.update(b"\1")
    return h.hexdigest()


def entry_key(encoder: str, version: str, field: str, tokens: bool, max_tokens: int,
              data_hash: str) -> str:
    spec = json.dumps([FORMAT_VERSION, encoder, version, field, tokens, max_tokens, data_hash])
    return hashlib.sha256(spec.encode()).hexdigest()[:20]


class FeatureCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / "features" / key

    def load(self, key: str, ids: list[str]) -> dict[str, torch.Tensor] | None:
        """Tensors of a complete entry whose id order matches, else None (a miss)."""
        p = self.path(key)
        meta_path, data_path = p / "meta.json", p / "features.safetensors"
        if not (meta_path.is_file() and data_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("ids") != ids:
                return None
            tensors = load_file(str(data_path))
        except (OSError, ValueError, SafetensorError):
            return None  # unreadable entry: recompute and overwrite
        if any(t.shape[0] != len(ids) for t in tensors.values()):
            return None  # rows do not match the ids: a damaged entry, recomputed
        return tensors

    def save(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        try:
            with atomic_write_dir(self.path(key)) as tmp:
                save_file({k: v.contiguous() for k, v in tensors.items()},
                          str(tmp / "features.safetensors"))
                (tmp / "meta.json").write_text(json.dumps({**meta, "format": FORMAT_VERSION}))
        except OSError as e:  # read-only or full: no entry is left, and the error names the folder
            raise ConfigError(f"{self.root}: cannot write the feature cache ({e.strerror or e}); "
                              "free space, fix its permissions or set MEMETRM_CACHE") from e
        except SafetensorError as e:
            raise ConfigError(f"{self.root}: cannot write the feature cache ({e})") from e
