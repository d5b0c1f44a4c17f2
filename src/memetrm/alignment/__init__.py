"""Image-text alignment on frozen towers: CLIP / MERU (Lorentz) / ITM objectives and evaluation."""

from memetrm.alignment.evaluate import evaluate_alignment, evaluate_alignment_dir
from memetrm.alignment.objectives import OBJECTIVES, AlignConfig, AlignModel
from memetrm.alignment.run import run_alignment
from memetrm.alignment.trainer import load_alignment, train_alignment

__all__ = [
    "OBJECTIVES",
    "AlignConfig",
    "AlignModel",
    "evaluate_alignment",
    "evaluate_alignment_dir",
    "load_alignment",
    "run_alignment",
    "train_alignment",
]
