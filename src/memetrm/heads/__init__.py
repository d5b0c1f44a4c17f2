"""Trainable heads chosen by name: ``create_head("mlp", input_dims, hidden=512)``.

Each head module registers itself with ``@register_head``; adding a head is one new file plus
its import below.
"""

from memetrm.heads import (  # noqa: F401  (each module registers its heads)
    cross_attention,
    ensemble,
    gated_xattn,
    hateclipper,
    hyperbolic,
    perceiver,
    qformer,
    retrieval,
    rgcl,
    simple,
    trm,
    trm_latent,
    trm_retrieval,
)
from memetrm.heads.base import Head, HeadConfig, Memory, Prediction, Recursive
from memetrm.heads.registry import (
    create_head,
    from_pretrained,
    head_config,
    head_entry,
    list_heads,
    register_head,
    save_pretrained,
)

__all__ = [
    "Head",
    "HeadConfig",
    "Memory",
    "Prediction",
    "Recursive",
    "create_head",
    "from_pretrained",
    "head_config",
    "head_entry",
    "list_heads",
    "register_head",
    "save_pretrained",
]
