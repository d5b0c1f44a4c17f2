"""Trainable heads chosen by name: ``create_head("mlp", input_dims, hidden=512)``."""

from memetrm.heads.base import Batch, Head, HeadConfig, StepFn
from memetrm.heads.cross_attention import CrossAttentionHead
from memetrm.heads.registry import (
    create_head,
    from_pretrained,
    head_entry,
    list_heads,
    load_config,
    register_head,
    save_pretrained,
)
from memetrm.heads.simple import LinearHead, MLPHead

register_head("linear", LinearHead)
register_head("mlp", MLPHead)
register_head("cross-attention", CrossAttentionHead)

__all__ = [
    "Batch",
    "Head",
    "HeadConfig",
    "StepFn",
    "create_head",
    "from_pretrained",
    "head_entry",
    "list_heads",
    "load_config",
    "register_head",
    "save_pretrained",
]
