"""Small shared helpers: atomic writes, seeding, hashing."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def default_cache_dir() -> Path:
    """Features and reassembled model weights live here (``MEMETRM_CACHE`` overrides)."""
    return Path(os.environ.get("MEMETRM_CACHE") or Path.home() / ".cache" / "memetrm")


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path, mode: int) -> None:
    """Temp files and dirs are created private (0600/0700); give the final output the mode a
    normal file would get (group-readable under the usual umask)."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_write_dir(path: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``path``; it replaces ``path`` only if the block succeeds.

    An interrupted write leaves the old content (or nothing), never a half-written folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        publish_mode(tmp, 0o777)
        for p in tmp.rglob("*"):
            publish_mode(p, 0o777 if p.is_dir() else 0o666)
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish_mode(Path(tmp), 0o666)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def split_field(spec: str, encoder: str) -> tuple[str, str]:
    """``text@mpnet-effnet`` -> ("text", "mpnet-effnet"); a bare field uses ``encoder``."""
    field, sep, enc = spec.partition("@")
    return field, (enc if sep else encoder)


def plural(n: int, word: str) -> str:
    """``1 seed``, ``2 seeds``: a count with its noun in the number the count asks for."""
    return f"{n} {word}{'' if n == 1 else 's'}"
