"""Serving a trained model: ``Predictor`` (Python), ``create_app`` (HTTP + web page), ``OCR``.

Names load on first use, so the light modules here (hash lists, PDQ) import without torch and
``memetrm --help`` stays fast; ``create_app`` lives in ``memetrm.serving.app``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"OCR": "memetrm.serving.ocr", "Predictor": "memetrm.serving.predictor"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memetrm.serving' has no attribute {name!r}")
