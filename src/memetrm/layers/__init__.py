"""Tensors-only building blocks shared by heads and alignment; imports nothing else of memetrm."""

from memetrm.layers import lorentz
from memetrm.layers.blocks import (
    Attention,
    Batch,
    Curvature,
    FeedForward,
    FieldNorm,
    FieldTokens,
    LorentzLift,
    MetricFn,
    StepFn,
    Trainable,
    clamp_,
    concat_fields,
    masked_mean,
    mlp,
)

__all__ = [
    "Attention",
    "Batch",
    "Curvature",
    "FeedForward",
    "FieldNorm",
    "FieldTokens",
    "LorentzLift",
    "MetricFn",
    "StepFn",
    "Trainable",
    "clamp_",
    "concat_fields",
    "lorentz",
    "masked_mean",
    "mlp",
]
