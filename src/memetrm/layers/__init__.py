"""Tensors-only building blocks shared by heads and alignment; imports nothing else of memetrm."""

from memetrm.layers import lorentz, recursion
from memetrm.layers.blocks import (
    Attention,
    Batch,
    CrossBlock,
    Curvature,
    FeedForward,
    FieldNorm,
    FieldTokens,
    LorentzLift,
    MetricFn,
    Resampler,
    StepFn,
    Trainable,
    attend,
    attention_stack,
    clamp_,
    concat_fields,
    masked_mean,
    mlp,
)
from memetrm.layers.memory import InnerProductIndex, MemoryBank

__all__ = [
    "Attention",
    "Batch",
    "CrossBlock",
    "Curvature",
    "FeedForward",
    "FieldNorm",
    "FieldTokens",
    "InnerProductIndex",
    "LorentzLift",
    "MemoryBank",
    "MetricFn",
    "Resampler",
    "StepFn",
    "Trainable",
    "attend",
    "attention_stack",
    "clamp_",
    "concat_fields",
    "lorentz",
    "masked_mean",
    "mlp",
    "recursion",
]
