"""Checks the scoring commands run on a saved model before (or without) loading it: what its
config.json says it reads, and whether its decision threshold puts nearly everything in one
class. Plain JSON and numpy: no torch, so a wrong input fails in a fraction of a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from memetrm.data.fields import client_fields
from memetrm.errors import DataError
from memetrm.evaluation.metrics import ONE_CLASS_SHARE, majority_share
from memetrm.progress import console


def input_fields(config: dict[str, Any]) -> list[str]:
    """The item fields a model reads (``text@mpnet-effnet`` reads ``text``, ``caption_mean``
    one ``caption``)."""
    return client_fields(config.get("fields") or [])


def check_one_meme(model: Path, config: dict[str, Any], has_image: bool,
                   texts: dict[str, str]) -> None:
    """Refuse a meme the model cannot score, before the encoder loads: an image model
    without an image, or text fields it reads that no image can supply (OCR supplies only
    ``text``)."""
    fields = input_fields(config)
    if "image" in fields and not has_image:
        raise DataError(f"{model} reads the image (fields {', '.join(fields)}): pass --image")
    missing = [f for f in fields if f not in ("image", *texts) and not (f == "text" and has_image)]
    if missing:
        raise DataError(f"{model} reads {', '.join(missing)}: pass "
                        + ", ".join(f"--{f}" for f in missing)
                        + (" (or --image, whose text is read by OCR)" if missing == ["text"] else ""))


def dev_share(config: dict[str, Any], threshold: float) -> float | None:
    """The share of the model's dev split in the larger class at ``threshold``, from the dev
    score quantiles saved with the model (None for a model saved without them)."""
    q = config.get("dev_quantiles")
    if not q:
        return None
    flagged = float(1 - np.interp(threshold, q, np.linspace(0, 1, len(q))))
    return max(flagged, 1 - flagged)


def warn_one_class(probs: np.ndarray | None, threshold: float, where: str, manual: bool,
                   config: dict[str, Any] | None = None) -> None:
    """A warning when ``threshold`` puts nearly all of ``probs`` (or, without them, the
    model's dev split) in one class; says whether the threshold was typed or chosen on dev."""
    if probs is None:
        share, where = dev_share(config or {}, threshold), "the model's dev split"
    else:
        share = majority_share(probs, threshold)
    if share is None or share <= ONE_CLASS_SHARE:
        return
    cause = ("set by --threshold" if manual else "chosen on dev: retrain with "
             "--threshold-metric balanced-accuracy, or pass --threshold")
    console.print(f"[yellow]warning:[/] threshold {threshold:.3f} ({cause}) labels {share:.0%} "
                  f"of {where} as one class", soft_wrap=True)


def warn_threshold(config: dict[str, Any], threshold: float | None) -> None:
    """``warn_one_class`` on the model's dev split, for commands that score unlabelled memes."""
    thr = config.get("threshold") if threshold is None else threshold
    if isinstance(thr, (int, float)):
        warn_one_class(None, float(thr), "", manual=threshold is not None, config=config)
