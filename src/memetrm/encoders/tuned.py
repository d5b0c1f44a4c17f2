"""``tuned:PATH``: a text tower tuned by ``memetrm tune`` beside the packaged image tower.

The cache identity is the SHA-256 of the folder's ``model.safetensors`` (not its path or
mtime), so features of one tuned tower are reused wherever it is copied, and a re-tuned tower
at the same path gets new features. Runs record it in their provenance as the encoder version.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from memetrm.encoders.base import Encoder
from memetrm.encoders.registry import register_encoder
from memetrm.encoders.towers import EFFNET_VERSION, Towers, sha256_file
from memetrm.errors import ConfigError

IMAGE_TOWER = "efficientnet_lite0"


def tuned_folder(arg: str) -> Path:
    """The tuned tower's folder, checked to hold sentence-transformers weights."""
    if not arg:
        raise ConfigError("tuned encoder needs a folder: --encoder tuned:PATH (from memetrm tune)")
    path = Path(arg).expanduser()
    if not (path / "model.safetensors").is_file():
        raise ConfigError(f"{path}: no model.safetensors; give a folder written by memetrm tune")
    return path


@cache
def _weights_hash(path: Path, size: int, mtime: int) -> str:
    return sha256_file(path)


def tuned_version(arg: str) -> str:
    weights = tuned_folder(arg) / "model.safetensors"
    st = weights.stat()
    digest = _weights_hash(weights.resolve(), st.st_size, st.st_mtime_ns)
    return f"{EFFNET_VERSION}+tuned-{digest[:16]}"


@register_encoder("tuned", version=tuned_version)
def _create_tuned(arg: str = "") -> Encoder:
    enc = Towers(str(tuned_folder(arg)), IMAGE_TOWER)
    enc.version = tuned_version(arg)
    return enc
