"""memetrm: frozen vision-language encoders + tiny trainable reasoning heads for memes.

The top-level names load on first use, so ``import memetrm.heads`` (or ``memetrm --help``) does
not pay for the encoders and datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "MemeRecord": "memetrm.data",
    "load_split": "memetrm.data",
    "create_encoder": "memetrm.encoders",
    "list_encoders": "memetrm.encoders",
    "create_head": "memetrm.heads",
    "list_heads": "memetrm.heads",
    "TrainConfig": "memetrm.training",
    "fit": "memetrm.training",
    "predict": "memetrm.training",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memetrm' has no attribute {name!r}")
