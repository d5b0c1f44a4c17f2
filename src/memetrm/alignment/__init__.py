"""Image-text alignment on frozen towers: CLIP / MERU (Lorentz) / ITM objectives and evaluation."""

from memetrm.alignment.evaluate import evaluate_alignment, evaluate_alignment_dir
from memetrm.alignment.objectives import ALIGN_TRAIN, OBJECTIVES, AlignConfig, AlignModel
from memetrm.alignment.run import run_alignment
from memetrm.alignment.trainer import (
    align_train_config,
    load_alignment,
    save_alignment,
    train_alignment,
)

__all__ = [
    "ALIGN_TRAIN",
    "OBJECTIVES",
    "AlignConfig",
    "AlignModel",
    "align_train_config",
    "evaluate_alignment",
    "evaluate_alignment_dir",
    "load_alignment",
    "run_alignment",
    "save_alignment",
    "train_alignment",
]
